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

Stopping: the iterate reproduces itself bit for bit (``exact``: F(s) = s, the sequential answer), or its residual
max |s_t - f(x_t, s_{t-1})| is at most ``tol`` (``converged``). Undamped Newton is only locally convergent: far from
the solution the linearized recurrence can grow without bound (products of Jacobians with norm > 1, the failure
ELK was built to damp). Two safeguards keep it honest: ``bounds`` projects every iterate onto a box the map is known
to preserve (a GRU's or tanh cell's states lie in [-1, 1]), and the solve returns the iterate with the smallest
residual seen, stopping once ``patience`` iterations in a row failed to improve it (floating-point rounding stalls
Newton a few ulps from the fixed point; only a Jacobi sweep from there certifies bitwise agreement).

Shapes: x (B, T, ...) per-step inputs; s0 (B, H); states (B, T, H). ``f(x, s)`` maps (N, ...) and (N, H) to (N, H)
for any N (a batch of steps); ``jacobian(x, s)`` (optional) maps them to (N, H, H).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from solvers.pieces import drain
from solvers.scan import linear_scan

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NewtonResult:
    states: torch.Tensor  # (B, T, H): s_1..s_T
    iterations: int  # Newton updates done (each: one batched f and Jacobian, one scan)
    converged: bool  # the returned iterate's residual is within tol
    exact: bool  # the returned iterate reproduces itself bit for bit (F(s) = s)
    residual: float  # max |s_t - f(x_t, s_{t-1})| at the returned iterate (the best one seen)


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


@dataclass(frozen=True)
class NewtonProgress:
    iterations: int  # Newton updates so far
    residual: float  # max |s_t - f(x_t, s_{t-1})| at the current iterate


def newton_chain(
    f: Step, x: torch.Tensor, s0: torch.Tensor, max_iterations: int | None = None, tol: float = 0.0,
    diagonal: bool = False, jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    bounds: tuple[float, float] | None = None, patience: int = 3,
) -> NewtonResult:  # fmt: skip
    """Solve s_t = f(x_t, s_{t-1}), t = 1..T, from the all-zero trajectory (DEER; diagonal: quasi-DEER)."""
    return drain(newton_chaining(f, x, s0, max_iterations, tol, diagonal, jacobian, bounds, patience))


def newton_chaining(
    f: Step, x: torch.Tensor, s0: torch.Tensor, max_iterations: int | None = None, tol: float = 0.0,
    diagonal: bool = False, jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    bounds: tuple[float, float] | None = None, patience: int = 3,
) -> Generator[NewtonProgress, None, NewtonResult]:  # fmt: skip
    """``newton_chain`` one iteration at a time (``solvers.pieces``): yields the progress before each update.

    Every pass evaluates f once on the whole current trajectory: that gives its residual (exact when 0) and the
    linearization for the next update, so the residual of the returned iterate is measured, never estimated.
    """
    batch, length = x.shape[:2]
    hidden = s0.shape[-1]
    jac = jacobian or autograd_jacobian(f)
    cap = length if max_iterations is None else max_iterations
    flat_x = x.reshape(batch * length, *x.shape[2:])
    states = s0.new_zeros(batch, length, hidden)
    best, best_residual, stalled, iterations = states, math.inf, 0, 0
    while True:
        previous = torch.cat([s0[:, None], states[:, :-1]], dim=1)
        values = f(flat_x, previous.reshape(-1, hidden)).reshape(batch, length, hidden)
        residual = float((states - values).abs().max()) if states.numel() else 0.0
        if residual < best_residual:
            best, best_residual, stalled = states, residual, 0
        else:
            stalled += 1
        if best_residual <= tol or iterations >= cap or stalled >= patience:
            break
        yield NewtonProgress(iterations, residual)
        a = jac(flat_x, previous.reshape(-1, hidden)).reshape(batch, length, hidden, hidden)
        if diagonal:
            a = torch.diagonal(a, dim1=-2, dim2=-1)
            b = values - a * previous
        else:
            b = values - (a @ previous[..., None])[..., 0]
        states = linear_scan(a, b, s0).h  # the linearized chain, from the given first state
        if bounds is not None:
            states = states.clamp(*bounds)
        iterations += 1
    return NewtonResult(best, iterations, best_residual <= tol, best_residual == 0.0, best_residual)
