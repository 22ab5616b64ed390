"""RNN gradients as a triangular linear system: ordinary BPTT, Jacobi (= truncated BPTT) and a parallel scan.

The gradient half of the recurrent families (``samplers.families.recurrent``).

For the next-pixel regressors of ``models.rnn`` with states h_0..h_T and loss L, let g_t = dL/dh_t. Then
    g_t = c_t + J_t^T g_{t+1},   g_T = c_T = 0,   c_t = W_o^T dL/do_t,   J_t = dh_{t+1}/dh_t,
an upper block-bidiagonal system (Naumov 2017, arXiv 1712.06577; Song et al. 2021, arXiv 2002.03629, sec. 4.3).
- ``sequential``: ordinary autograd BPTT on the model (the reference).
- ``jacobi``: ``solvers.solve`` on the time-reversed system; one iteration is one batched vector-Jacobian
  product over all T steps (matrix-free). n iterations from zero are exactly n-step truncated BPTT; exact once
  the prefix is certified (at most T iterations). With ``max_iterations`` < that, the answer says ``exact: false``.
- ``scan``: ``solvers.scan.linear_scan`` on the explicit Jacobians, exact in ceil(log2 T) levels.
Parameter gradients then come from batched reductions over (B, T) of per-step contributions.

Shapes: x (B, T) pixels in [0, 1]; states (B, T+1, H); g (B, T, H) = g_1..g_T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.rnn import RecurrentRegressor
from samplers.requests import GradientRequest, GradientResponse, GradientVerified, TensorOut
from samplers.work import PIECE_STEPS, Context, Pieces, Respond, SliceWork
from solvers import drain, solving_backward
from solvers.scan import scanning

GRADIENT_METHODS = ("sequential", "jacobi", "scan")
# Dense Jacobians held at once: larger batches are scanned in groups of rows. Computing them (``step_jacobian``)
# and scanning them take a few times this much more: 16 MiB keeps a gru-fmnist batch of 64 under 0.5 GB, and one
# scan level (a piece of a server's slice) under ~60 ms.
SCAN_BYTES = 16 * 2**20


@dataclass(frozen=True)
class GradientResult:
    loss: float
    gradients: dict[str, torch.Tensor]  # name -> gradient, same shape as the parameter (or (B, T) for inputs)
    iterations: int  # sequential steps of the method: T (sequential), Jacobi evaluations, or scan levels
    exact: bool  # the solve is the full BPTT gradient (to rounding); False for truncated Jacobi
    residual: float  # max |g_t - c_t - J_t^T g_{t+1}| of the returned g (0 for autograd)
    method: str


def states_in_pieces(model: RecurrentRegressor, x: torch.Tensor) -> Pieces[torch.Tensor]:
    """``model.hidden_states(x)`` (eval mode), pausing every ``PIECE_STEPS`` steps: the same loop, the same bits.
    x: (B, T) -> (B, T+1, H)."""
    states = [x.new_zeros(x.shape[0], model.config.hidden_size)]
    for t in range(x.shape[1]):
        states.append(model.cell(x[:, t], states[-1]))
        if t % PIECE_STEPS == PIECE_STEPS - 1:
            yield
    return torch.stack(states, dim=1)


def autograd_gradient(
    model: RecurrentRegressor, x: torch.Tensor, wrt: str, targets: torch.Tensor | None = None
) -> tuple[float, dict[str, torch.Tensor]]:
    """Ordinary backpropagation through time. targets: (B, T), default the inputs (next-pixel regression)."""
    return drain(autograd_pieces(model, x, wrt, targets))


def autograd_pieces(
    model: RecurrentRegressor, x: torch.Tensor, wrt: str, targets: torch.Tensor | None = None,
    steps_per_piece: int | None = None,
) -> Pieces[tuple[float, dict[str, torch.Tensor]]]:  # fmt: skip
    """``autograd_gradient`` in pieces: the states forward without a graph, then backward through time a segment
    of ``steps_per_piece`` steps at a time (all of them: None), from the end, each segment's steps recomputed with
    autograd from its first state (gradient checkpointing: the same backward steps, exact up to the order in
    which the segments' parameter gradients are added)."""
    batch, length = x.shape
    states = yield from states_in_pieces(model, x)  # (B, T+1, H), h_T predicts nothing
    params = dict(model.named_parameters())
    grads = {name: torch.zeros_like(p) for name, p in params.items()} if wrt == "params" else {}
    d_inputs: list[torch.Tensor] = []
    g_next, total = torch.zeros_like(states[:, 0]), 0.0  # dL/dh_T = 0
    segment = steps_per_piece or max(length, 1)
    for t1 in range(length, 0, -segment):
        t0 = max(0, t1 - segment)
        with torch.inference_mode(False), torch.enable_grad():  # whatever mode the caller runs in
            h0 = states[:, t0].clone().requires_grad_(True)
            xs = x[:, t0:t1].clone().requires_grad_(wrt == "inputs")
            wanted = xs if targets is None else targets[:, t0:t1]
            h, loss = h0, h0.new_zeros(())
            with model.holding():  # a recurrent weight built from parameters is built once per segment
                for t in range(t1 - t0):  # o_t from h_t, then h_{t+1} = cell(x_t, h_t)
                    loss = loss + ((model.readout(h)[..., 0] - wanted[:, t]) ** 2).sum()
                    h = model.cell(xs[:, t], h)
            loss = loss / (batch * length)
            leaves = [h0, xs] if wrt == "inputs" else [h0, *params.values()]
            found = torch.autograd.grad([loss, h], leaves, [torch.ones_like(loss), g_next], allow_unused=True)
        total += float(loss.detach())
        g_next = found[0] if found[0] is not None else torch.zeros_like(g_next)
        if wrt == "inputs":
            d_inputs.insert(0, found[1] if found[1] is not None else torch.zeros_like(xs.detach()))
        for name, part in zip(params, found[1:], strict=False) if wrt == "params" else ():
            if part is not None:
                grads[name] += part
        yield
    if wrt == "inputs":
        return total, {"inputs": torch.cat(d_inputs, dim=1) if d_inputs else torch.zeros_like(x)}
    return total, grads


class BackwardSystem:
    """The linear system g_t = c_t + J_t^T g_{t+1} of one batch, with everything the solvers need."""

    def __init__(
        self, model: RecurrentRegressor, x: torch.Tensor, targets: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """states: ``model.hidden_states(x)`` if already computed (``build`` computes them in pieces)."""
        self.model, self.x, self.own_targets = model, x, targets is None
        batch, length = x.shape
        wanted = x if targets is None else targets
        with torch.no_grad():
            self.states = model.hidden_states(x) if states is None else states  # (B, T+1, H)
            predictions = model.predict(self.states)  # (B, T)
            self.loss = float(((predictions - wanted) ** 2).mean())
            self.d_out = 2.0 * (predictions - wanted) / (batch * length)  # dL/do_t, t = 0..T-1
            direct = self.d_out[..., None] * model.readout.weight[0]  # c_t for t = 0..T-1
            # Unknowns g_1..g_T: c_1..c_{T-1}, then c_T = 0 (h_T predicts nothing).
            self.c = torch.cat([direct[:, 1:], torch.zeros_like(direct[:, :1])], dim=1)
            # Local derivatives of steps t = 0..T-1 (h_{t+1} = cell(x_t, h_t)), computed once for every solver.
            self.local = model.step_locals(x, self.states[:, :-1])
            self.local_after_first = {name: value[:, 1:] for name, value in self.local.items()}  # t = 1..T-1

    @classmethod
    def build(
        cls, model: RecurrentRegressor, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> Pieces[BackwardSystem]:
        return cls(model, x, targets, (yield from states_in_pieces(model, x)))

    @torch.no_grad()
    def vjp(self, g: torch.Tensor) -> torch.Tensor:
        """(J_t^T g_{t+1}) for t = 1..T given g = g_1..g_T; the term for t = T is 0. (B, T, H)."""
        out, _, _ = self.model.step_backward(self.local_after_first, g[:, 1:], params=False)
        return torch.cat([out, torch.zeros_like(g[:, :1])], dim=1)

    @torch.no_grad()
    def residual(self, g: torch.Tensor) -> float:
        return float((g - self.c - self.vjp(g)).abs().max()) if g.numel() else 0.0

    @torch.no_grad()
    def jacobians(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """A_t = J_t^T for t = 1..T (A_T = 0), (B, T, H, H), for the scan (of the given batch rows)."""
        x_t, h_t = self.x[rows, 1:], self.states[rows, 1:-1]
        jt = self.model.step_jacobian(x_t, h_t).transpose(-1, -2)
        return torch.cat([jt, torch.zeros_like(jt[:, :1])], dim=1)

    @torch.no_grad()
    def gradients(self, g: torch.Tensor, wrt: str) -> dict[str, torch.Tensor]:
        """Batched reductions: every parameter's gradient from g_1..g_T (or dL/dx)."""
        model, states = self.model, self.states
        _, step_grads, d_x = model.step_backward(self.local, g, params=wrt == "params")  # steps t = 0..T-1
        if wrt == "inputs":  # through the steps, and (next-pixel regression) as the regression target
            return {"inputs": d_x - self.d_out if self.own_targets else d_x}
        grads = dict(step_grads)
        h_pred = states[:, :-1]
        grads["readout.weight"] = (self.d_out[..., None] * h_pred).sum(dim=(0, 1))[None]
        grads["readout.bias"] = self.d_out.sum().reshape(1)
        return {name: grads[name] for name, _ in model.named_parameters()}


def rnn_gradient(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "scan", wrt: str = "params",
    max_iterations: int | None = None, targets: torch.Tensor | None = None,
) -> GradientResult:  # fmt: skip
    """Gradient of the mean loss over the batch x: (B, T) (targets: default x itself) by the chosen method."""
    with torch.no_grad():
        return drain(gradient_pieces(model, x, method, wrt, max_iterations, targets))


def gradient_pieces(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "scan", wrt: str = "params",
    max_iterations: int | None = None, targets: torch.Tensor | None = None, steps_per_piece: int | None = None,
) -> Pieces[GradientResult]:  # fmt: skip
    """``rnn_gradient`` in pieces: segments of time for BPTT, solver evaluations for Jacobi, scan levels. Run it
    without autograd (``torch.no_grad`` or ``inference_mode``): only BPTT records a graph, and it says so itself."""
    if wrt not in ("params", "inputs"):
        raise ValueError(f"wrt must be 'params' or 'inputs'; got {wrt!r}")
    if method not in GRADIENT_METHODS:
        raise ValueError(f"method must be one of sequential, jacobi, scan; got {method!r}")
    length = x.shape[1]
    if method == "sequential":
        loss, grads = yield from autograd_pieces(model, x, wrt, targets, steps_per_piece)
        return GradientResult(loss, grads, length, True, 0.0, method)
    system = yield from BackwardSystem.build(model, x, targets)
    if method == "jacobi":
        step = lambda g: system.c + system.vjp(g)  # noqa: E731
        result = yield from solving_backward(step, torch.zeros_like(system.c), "jacobi", max_iterations)
        g, exact = result.x, result.all_converged
        iterations = int(result.iterations.max()) if result.iterations.numel() else 0
    else:
        g, iterations, exact = (yield from scan_pieces(system)), levels_of(length), True
    yield
    gradients = system.gradients(g, wrt)
    yield
    return GradientResult(system.loss, gradients, iterations, exact, system.residual(g), method)


def levels_of(length: int) -> int:
    """Combine levels of the scan: ceil(log2 T)."""
    return math.ceil(math.log2(length)) if length > 1 else 0


def scan_pieces(system: BackwardSystem) -> Pieces[torch.Tensor]:
    """The scan over groups of rows whose Jacobians fit ``SCAN_BYTES`` (independent rows: the depth is the same),
    a piece per group's Jacobians and per scan level."""
    batch, length, hidden = system.c.shape
    per_row = length * hidden * hidden * system.c.element_size()
    group = max(1, SCAN_BYTES // max(per_row, 1))
    parts = []
    for rows in torch.split(torch.arange(batch, device=system.c.device), group):
        jacobians = system.jacobians(rows)
        yield
        parts.append((yield from scanning(jacobians, system.c[rows], reverse=True, overwrite=True)).h)
        del jacobians
    return torch.cat(parts) if parts else system.c.clone()


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a) if a else 0.0


def gradient_work(
    model: RecurrentRegressor, request: GradientRequest, method: str, x: torch.Tensor, targets: torch.Tensor | None
) -> SliceWork:
    """POST /gradient as work done in slices; ``method`` is a concrete one ("auto" resolved)."""

    def pieces() -> Pieces[Respond]:
        result = yield from gradient_pieces(model, x, method, request.wrt, request.max_iterations, targets, PIECE_STEPS)
        verified = None
        if request.verify:
            _, reference = yield from autograd_pieces(model, x, request.wrt, targets, PIECE_STEPS)
            verified = GradientVerified(max_abs_diff=max_abs_diff(result.gradients, reference))
        gradients = {k: TensorOut.model_construct(shape=list(v.shape), data=v.flatten().tolist())
                     for k, v in result.gradients.items()}  # fmt: skip

        def respond(context: Context) -> GradientResponse:
            return GradientResponse.model_construct(
                model=request.model, method=method, loss=result.loss, gradients=gradients,
                iterations=result.iterations, sequential_steps=x.shape[1], residual=result.residual,
                exact=result.exact, verified=verified, timings_ms=context.timings(),
            )  # fmt: skip

        finished: Respond = respond
        return finished

    return SliceWork(pieces())
