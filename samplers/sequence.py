"""RNN forward inference as a lower-triangular system: h_{t+1} = cell(x_t, h_t), the states are the unknowns.

One Jacobi iteration applies the cell to every step at once (one batched call over B*T rows) from the current
iterate of the states; after k iterations the first k states are final, and the solve stops as soon as the
iterate reproduces itself (often well before T: contractive cells forget, and floating point forgets faster).
The cell is batch invariant (``models.invariance``: rows padded to a multiple of 8), so a row computes the same
bits in a batched call over B*T rows as in the step-by-step loop over B rows: with ``tol=0`` the answer is bit for
bit ``model.hidden_states`` (``verify`` checks it and reports ``equal``).

Shapes: x (B, T) pixels; states (B, T, H) = h_1..h_T; predictions (B, T).
"""

from __future__ import annotations

from typing import Any

import torch

from models.rnn import RecurrentRegressor
from samplers import inference
from samplers.inference import Forward
from solvers import solve


def forward_solve(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "jacobi", tol: float = 0.0,
    max_iterations: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool, float]:  # fmt: skip
    """(predictions (B, T), iterations (B,), converged, residual) by ``solvers.solve`` over the states."""
    batch, length = x.shape
    hidden = model.config.hidden_size

    def step(h: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        previous = torch.cat([h.new_zeros(h.shape[0], 1, hidden), h[:, :-1]], dim=1)  # h_0 = 0, h_1..h_{T-1}
        return model.cell(x[rows].reshape(-1), previous.reshape(-1, hidden)).reshape(h.shape)

    x0 = x.new_zeros(batch, length, hidden)
    result = solve(step, x0, method=method, tol=tol, max_iterations=max_iterations)
    certified = result.all_converged and tol == 0.0
    residual = inference.residual(certified, lambda: step(result.x, torch.arange(batch)), result.x)
    states = torch.cat([x.new_zeros(batch, 1, hidden), result.x], dim=1)
    return model.predict(states), result.iterations, result.all_converged, residual


def infer_body(
    model: RecurrentRegressor, name: str, x: torch.Tensor, method: str, tol: float, max_iterations: int | None,
    verify: bool,
) -> dict[str, Any]:  # fmt: skip
    """The JSON body of POST /infer for a sequence model: next-pixel predictions."""

    def run() -> Forward:
        if method == "sequential":  # the ordinary loop over time steps
            return Forward(model(x), [x.shape[1]] * x.shape[0], True, 0.0)
        predictions, iterations, converged, residual = forward_solve(model, x, method, tol, max_iterations)
        return Forward(predictions, iterations.tolist(), converged, residual)

    return inference.infer_body(name, method, x.shape[1], tol, verify, run, lambda: model(x),
                                lambda predictions: predictions.tolist())  # fmt: skip
