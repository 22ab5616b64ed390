"""The recurrent families (softplus RNN, GRU, orthogonal RNN): inference and gradients through the solvers.

Inference (POST /infer) is a lower-triangular system: h_{t+1} = cell(x_t, h_t), the states are the unknowns.

One Jacobi iteration applies the cell to every step not yet final at once (one batched call) from the current
iterate of the states; after k iterations the first k states are final, and the solve stops as soon as the
iterate reproduces itself (often well before T: contractive cells forget, and floating point forgets faster).
``gs_jacobi`` slides a window of ceil(sqrt(T)) states past the final prefix and evaluates only the window, so an
iteration costs W cells per sequence instead of T - final.
The cell is batch invariant (``models.invariance``: rows padded to a multiple of 8), so a row computes the same
bits in a batched call over B*T rows as in the step-by-step loop over B rows: with ``tol=0`` the answer is bit for
bit ``model.hidden_states`` (``verify`` checks it and reports ``equal``). ``newton`` (DEER, then Jacobi to certify)
and ``mgrit`` (multigrid in time) solve the same chain (``samplers.chains``).

Gradients (POST /gradient) solve backpropagation through time as a linear system (``samplers.bptt``).

Shapes: x (B, T) pixels; states (B, T, H) = h_1..h_T; predictions (B, T).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.registry import Entry
from models.rnn import RecurrentRegressor
from samplers import chains, inference
from samplers.bptt import GRADIENT_METHODS, SCAN_BYTES, gradient_work, states_in_pieces
from samplers.family import Cost, Family, Limits, ModelInfo, Offer
from samplers.inference import Forward
from samplers.inputs import InputError, as_tensor, sequence_array
from samplers.work import PIECE_ROWS, Pieces, SliceWork
from solvers import drain, solving

if TYPE_CHECKING:
    from samplers.engine import Engine

INFER_METHODS = ("sequential", "jacobi", "gs_jacobi", "newton", "mgrit")


def forward_solve(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "jacobi", tol: float = 0.0,
    max_iterations: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool, float]:  # fmt: skip
    """(predictions (B, T), iterations (B,), converged, residual) by ``solvers.solve`` over the states."""
    with torch.no_grad():
        return drain(forward_pieces(model, x, method, tol, max_iterations))


def forward_pieces(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "jacobi", tol: float = 0.0,
    max_iterations: int | None = None, rows_per_call: int | None = None, start: torch.Tensor | None = None,
) -> Pieces[tuple[torch.Tensor, torch.Tensor, bool, float]]:  # fmt: skip
    """``forward_solve`` piece by piece (``solvers.solving``), ``rows_per_call`` sequences per evaluation, from the
    states ``start`` (B, T, H) if given (a candidate to certify or repair), else from zeros."""
    batch, length = x.shape
    hidden = model.config.hidden_size

    def step(h: torch.Tensor, rows: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """The cell on the states the solver will read: t in [lo, hi) per row (the rest of y is left as h)."""
        previous = torch.cat([h.new_zeros(h.shape[0], 1, hidden), h[:, :-1]], dim=1)  # h_0 = 0, h_1..h_{T-1}
        width = int((span[:, 1] - span[:, 0]).max())
        t = torch.clamp(span[:, :1] + torch.arange(width, device=h.device), max=length - 1)  # (P, W) steps
        states = previous.gather(1, t[..., None].expand(-1, -1, hidden))
        new = model.cell(x[rows].gather(1, t).reshape(-1), states.reshape(-1, hidden)).reshape(states.shape)
        return h.clone().scatter_(1, t[..., None].expand(-1, -1, hidden), new)  # clamped repeats: equal values

    x0 = x.new_zeros(batch, length, hidden) if start is None else start
    result = yield from solving(step, x0, method, max_iterations, tol=tol, rows_per_call=rows_per_call)
    certified = result.all_converged and tol == 0.0
    everything = torch.tensor([[0, length]] * batch, device=x.device)
    residual = inference.residual(certified, lambda: step(result.x, torch.arange(batch), everything), result.x)
    states = torch.cat([x.new_zeros(batch, 1, hidden), result.x], dim=1)
    return model.predict(states), result.iterations, result.all_converged, residual


class RecurrentFamily(Family):
    """Recurrent next-pixel regressors (``models.rnn``): POST /infer (forward) and POST /gradient (backward)."""

    kind = "sequence"

    def __init__(self) -> None:
        self.offers = {
            "infer": Offer(INFER_METHODS, auto_key=f"{self.name}-infer", fallback="sequential"),
            "gradient": Offer(GRADIENT_METHODS, auto_key=f"{self.name}-gradient", fallback="sequential"),
        }

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        size = int(entry.config.get("image_size", 10))
        return [size * size], size * size

    def cost(self, task: str, request: Any, entry: Entry, method: str) -> Cost:
        """From the sequence length T, hidden size H and batch B: the states and their per-step derivatives
        (about a dozen (B, T, H) tensors), the scan's dense H x H Jacobians in groups of ``SCAN_BYTES`` (a few times
        that while they are formed), and the arithmetic of each method's worst case (Jacobi: T iterations; Newton:
        its updates, then Jacobi's worst case; MGRIT: ceil(T/m) + 1 cycles of about three sweeps)."""
        t = self.describe(entry)[1]
        h = int(entry.config.get("hidden_size", 128))
        b = len(request.inputs) if request.inputs is not None else request.batch
        cell = 2.0 * (3 if self.name == "gru" else 1) * h * (h + 1)  # one step of one sequence
        states = 12 * b * t * h * 4
        if task == "infer":
            newton = b * chains.NEWTON_ITERATIONS * t * (math.log2(max(t, 2)) + 2) * 2.0 * h**3 + b * t * t * cell
            mgrit = 3 * b * t * cell * (t / chains.MGRIT_COARSENING + 1)
            flops = {"sequential": b * t * cell, "newton": newton, "mgrit": mgrit}.get(method, b * t * t * cell)
        else:
            flops = {"sequential": 3 * b * t * cell, "scan": b * t * (math.log2(max(t, 2)) + 2) * 2.0 * h**3}.get(
                method, b * t * t * 2 * cell
            )
        scan = 6 * min(SCAN_BYTES, b * t * h * h * 4) if method in ("scan", "newton") else 0
        verify = 3 * b * t * cell if request.verify else 0.0
        return Cost(states + scan, flops + verify, "inputs" if request.inputs is not None else "batch")

    @staticmethod
    def parse(info: ModelInfo, limit: int) -> Callable[[Any, str], np.ndarray]:
        return lambda value, field: sequence_array(value, info.sequential_steps, field, limit, info.name)

    def check(self, task: str, request: Any, info: ModelInfo, limits: Limits) -> None:
        parse = self.parse(info, limits.max_batch_inputs)
        inference.check_infer(request, parse, limits.max_batch_inputs)
        if task == "gradient" and request.targets is not None:
            if request.inputs is None:
                raise InputError("targets", "targets need explicit inputs")
            targets, inputs = parse(request.targets, "targets"), parse(request.inputs, "inputs")
            if targets.shape != inputs.shape:
                raise InputError("targets", f"must have the shape of inputs {list(inputs.shape)}")

    def start(self, task: str, engine: Engine, request: Any, method: str, block_size: int | None) -> SliceWork:
        model: RecurrentRegressor = engine.model(request.model)
        parse = self.parse(engine.info(request.model), sys.maxsize)
        x = inference.request_inputs(engine, request, parse)
        if task == "gradient":
            targets = None if request.targets is None else as_tensor(parse(request.targets, "targets")).to(x.device)
            return gradient_work(model, request, method, x, targets)

        def sequential() -> Pieces[torch.Tensor]:  # the ordinary loop over time steps
            return model.predict((yield from states_in_pieces(model, x)))

        def run() -> Pieces[Forward]:
            if method == "sequential":
                return Forward((yield from sequential()), [x.shape[1]] * x.shape[0], True, 0.0)
            if method == "newton":
                newton = chains.newton_forward(model, x, request.tol, jacobi_from, request.max_iterations)
                return Forward(*(yield from newton))
            if method == "mgrit":
                return Forward(*(yield from chains.mgrit_forward(model, x, request.tol, request.max_iterations)))
            predictions, iterations, converged, residual = yield from forward_pieces(
                model, x, method, request.tol, request.max_iterations, PIECE_ROWS
            )
            return Forward(predictions, iterations.tolist(), converged, residual)

        def jacobi_from(start: torch.Tensor) -> Pieces[tuple[torch.Tensor, torch.Tensor, bool, float]]:
            return forward_pieces(model, x, "jacobi", request.tol, request.max_iterations, PIECE_ROWS, start)

        return inference.infer_work(request, method, x.shape[1], run, sequential,
                                    lambda predictions: predictions.tolist())  # fmt: skip


class RNNFamily(RecurrentFamily):
    name = "rnn"


class GRUFamily(RecurrentFamily):
    name = "gru"


class OrthogonalFamily(RecurrentFamily):
    name = "orthogonal"  # the recurrent weight is U(angles) (models.givens): served exactly like the softplus RNN
