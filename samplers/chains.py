"""Newton (DEER) and MGRIT forwards of the recurrent models (POST /infer ``newton`` and ``mgrit``).

Both solve the chain h_{t+1} = cell(x_t, h_t) that Jacobi solves (``samplers.families.recurrent``), with the
methods of ``solvers.newton`` and ``solvers.mgrit``, and keep its contract: ``exact`` means the returned states
reproduce themselves bit for bit under the cell (F(h) = h), which for a batch-invariant cell is the sequential loop.

- ``newton``: at most ``NEWTON_ITERATIONS`` Newton updates (closed-form Jacobians ``model.step_jacobian``, each
  update one parallel scan, iterates kept in ``model.state_bounds``), then Jacobi from Newton's best iterate. Newton
  proposes, Jacobi certifies: with tol = 0 Jacobi repairs the candidate until it reproduces itself (Newton's
  float32 rounding leaves a few ulps that only such sweeps remove); with tol > 0 one evaluation confirms it. The
  iterations reported per sequence are Newton updates plus Jacobi evaluations; ``max_iterations`` caps each of
  the two phases.
- ``mgrit``: two-level MGRIT with FCF relaxation, coarsening ``MGRIT_COARSENING``, the cell itself as the coarse
  step (one cell step per coarse interval); it terminates exactly after at most ceil(T/m) + 1 cycles
  (``max_iterations`` caps the cycles). The iterations reported are its depth, vectorized cell calls on the
  critical path of both levels, so they may exceed T (``sequential_steps``): that is MGRIT losing, not an error.

Shapes: x (B, T) pixels; states (B, T, H) = h_1..h_T.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.rnn import RecurrentRegressor
from samplers.bptt import SCAN_BYTES
from samplers.work import Pieces
from solvers.mgrit import MGRITConfig, mgriting
from solvers.newton import newton_chaining

NEWTON_ITERATIONS = 20  # Newton updates before Jacobi takes over (the shipped models stall or diverge after ~10)
MGRIT_COARSENING = 8  # fine steps per coarse step

Certify = Callable[[torch.Tensor], Pieces[tuple[torch.Tensor, torch.Tensor, bool, float]]]


def newton_forward(
    model: RecurrentRegressor, x: torch.Tensor, tol: float, certify: Certify, max_iterations: int | None = None
) -> Pieces[tuple[torch.Tensor, list[int], bool, float]]:  # fmt: skip
    """(predictions (B, T), iterations per sequence, converged, residual): Newton in groups of rows whose dense
    Jacobians fit ``SCAN_BYTES``, a piece per update; then ``certify(states)``, Jacobi from those states."""
    batch, length = x.shape
    hidden = model.config.hidden_size
    group = max(1, SCAN_BYTES // max(length * hidden * hidden * x.element_size(), 1))
    updates = NEWTON_ITERATIONS if max_iterations is None else min(NEWTON_ITERATIONS, max_iterations)
    parts, done = [], []
    for rows in torch.split(torch.arange(batch, device=x.device), group):
        result = yield from newton_chaining(
            model.cell, x[rows], x.new_zeros(len(rows), hidden), updates, tol,
            jacobian=model.step_jacobian, bounds=model.state_bounds,
        )  # fmt: skip
        parts.append(result.states)
        done += [result.iterations] * len(rows)
    start = torch.cat(parts) if parts else x.new_zeros(0, length, hidden)
    predictions, iterations, converged, residual = yield from certify(start)
    return predictions, [u + int(i) for u, i in zip(done, iterations.tolist(), strict=True)], converged, residual


def mgrit_forward(
    model: RecurrentRegressor, x: torch.Tensor, tol: float, max_iterations: int | None
) -> Pieces[tuple[torch.Tensor, list[int], bool, float]]:  # fmt: skip
    """(predictions (B, T), depth per sequence, converged, residual) by MGRIT over the T steps, a piece per cycle."""
    batch, length = x.shape
    hidden = model.config.hidden_size

    def step(n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # n (P,), u (P, B, H): the cell at steps n
        return model.cell(x[:, n].T.reshape(-1), u.reshape(-1, hidden)).reshape(u.shape)

    config = MGRITConfig(coarsening=MGRIT_COARSENING, levels=2, relax="FCF", max_iterations=max_iterations, tol=tol)
    result = yield from mgriting(step, x.new_zeros(batch, hidden), length, config)
    states = result.states.transpose(0, 1)  # (B, T+1, H) with h_0
    return model.predict(states), [result.depth] * batch, result.converged, result.residual
