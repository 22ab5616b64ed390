"""Newton's method for chains s_t = f(x_t, s_{t-1}): DEER (Lim et al., ICLR 2024) and a diagonal quasi-Newton
variant (quasi-DEER / ELK, Gonzalez et al., NeurIPS 2024).

The chain is a lower-triangular nonlinear system in the states s_1..s_T. Jacobi evaluates f at the current
trajectory and moves the exact prefix forward by about one step per iteration. Newton linearizes f around the
current trajectory instead,
    s_t = f(x_t, s̄_{t-1}) + J_t (s_{t-1} - s̄_{t-1}),   J_t = df/ds at (x_t, s̄_{t-1}),
and solves that linear recurrence for all t at once with the parallel scan (``solvers.scan``): one iteration is
one batched evaluation of f and its Jacobians plus ceil(log2 T) scan levels. Like Jacobi it has finite
termination (after k iterations the first k states are the sequential ones, in exact arithmetic), and it converges
quadratically near the solution. ``diagonal=True`` keeps only diag(J_t): O(T H) per iteration instead of dense
H x H scans, at the price of more iterations.

Stopping: the iterate reproduces itself bit for bit (``exact``: then F(s) = s, the sequential answer), or every
state moved by at most ``tol``; the result reports the residual max |s_t - f(x_t, s_{t-1})| either way.

Shapes: x (B, T, ...) per-step inputs; s0 (B, H); states (B, T, H). ``f(x, s)`` maps (N, ...) and (N, H) to (N, H)
for any N (a batch of steps); ``jacobian(x, s)`` (optional) maps them to (N, H, H).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from solvers.scan import linear_scan

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NewtonResult:
    states: torch.Tensor  # (B, T, H): s_1..s_T
    iterations: int  # Newton iterations (each: one batched f and Jacobian, one scan)
    converged: bool  # stopped by exact agreement or tol, not by max_iterations
    exact: bool  # the last iterate reproduced itself bit for bit
    residual: float  # max |s_t - f(x_t, s_{t-1})|


def autograd_jacobian(f: Step) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-row Jacobians df/ds (N, H, H) of ``f`` by forward-mode autodiff over the H state directions."""

    def jacobian(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n, h = s.shape
        eye = torch.eye(h, dtype=s.dtype, device=s.device)
        columns = []
        for k in range(h):
            out = torch.func.jvp(lambda state: f(x, state), (s,), (eye[k].expand(n, h),))
            columns.append(out[1])
        return torch.stack(columns, dim=-1)

    return jacobian


def newton_chain(
    f: Step, x: torch.Tensor, s0: torch.Tensor, max_iterations: int | None = None, tol: float = 0.0,
    diagonal: bool = False, jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> NewtonResult:  # fmt: skip
    """Solve s_t = f(x_t, s_{t-1}), t = 1..T, from the all-zero trajectory (DEER; diagonal: quasi-DEER)."""
    batch, length = x.shape[:2]
    hidden = s0.shape[-1]
    jac = jacobian or autograd_jacobian(f)
    cap = max_iterations or length
    states = s0.new_zeros(batch, length, hidden)

    def evaluate(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        previous = torch.cat([s0[:, None], states[:, :-1]], dim=1)
        flat_x, flat_s = x.reshape(batch * length, *x.shape[2:]), previous.reshape(-1, hidden)
        return f(flat_x, flat_s).reshape(batch, length, hidden), previous

    iterations, converged, exact = 0, False, False
    while iterations < cap:
        values, previous = evaluate(states)
        flat_x, flat_s = x.reshape(batch * length, *x.shape[2:]), previous.reshape(-1, hidden)
        a = jac(flat_x, flat_s).reshape(batch, length, hidden, hidden)
        if diagonal:
            a = torch.diagonal(a, dim1=-2, dim2=-1)
            b = values - a * previous
        else:
            b = values - (a @ previous[..., None])[..., 0]
        new = linear_scan(a, b, s0).h  # the linearized chain, from the given first state
        iterations += 1
        exact = torch.equal(new, states)
        converged = exact or float((new - states).abs().max()) <= tol
        states = new
        if converged:
            break
    values, _ = evaluate(states)
    residual = float((states - values).abs().max()) if states.numel() else 0.0
    return NewtonResult(states, iterations, converged, exact or residual == 0.0, residual)
