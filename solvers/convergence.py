"""The convergence test shared by every fixed-point method: the consistent prefix.

A lower-triangular system has unknowns s_0..s_{T-1} with s_t = f_t(s_0..s_{t-1}); its solution is unique.
Let x be any iterate and y = step(x), so y_t = f_t(x_{<t}). If y_t == x_t for every t < c, then x_{<c} satisfies
the first c equations, and by induction on t (x_0 = f_0(), x_1 = f_1(x_0), ...) it *is* the solution there.
Moreover y_c = f_c(x_{<c}) is then the exact value of unknown c. So one evaluation of the step certifies the
prefix [0, c] as final, where c is the first position at which the iterate and its image disagree.

This is the only test the solvers use (Song et al., "Accelerating Feedforward Computation via Parallel Nonlinear
Equation Solving", ICML 2021, arXiv 2002.03629, section 3 uses the agreement of consecutive iterates; this is the
same criterion stated per position, which also credits the first disagreeing position).

With ``tol > 0`` "agree" means max-abs difference <= tol over the unknown's trailing dims: the certified prefix is
then final only up to that tolerance, which the caller accepted by asking for it.

Shapes: x, y: (R, T, *shape) for R rows (independent systems) of T unknowns each.
"""

from __future__ import annotations

import torch


def agreement(y: torch.Tensor, x: torch.Tensor, tol: torch.Tensor | None = None) -> torch.Tensor:
    """Whether each unknown of ``y`` agrees with the same unknown of ``x``.

    y, x: (R, T, *shape). tol: (R,) float64 per-row tolerance, or None for exact equality everywhere.
    Returns (R, T) bool. Exact equality treats two NaNs as equal, so that a system whose solution contains NaN
    still converges (the iterate reproduces itself), and -0.0 == 0.0 as IEEE says.
    """
    rows, length = x.shape[0], x.shape[1]
    same = y == x
    if y.is_floating_point() or y.is_complex():
        same = same | (torch.isnan(y) & torch.isnan(x))
    exact = same.reshape(rows, length, -1).all(dim=2)
    if tol is None or not bool((tol > 0).any()):
        return exact
    diff = (y.to(torch.float64) - x.to(torch.float64)).abs().reshape(rows, length, -1).amax(dim=2)
    close = diff <= tol[:, None]
    return torch.where(tol[:, None] > 0, close | exact, exact)


def first_disagreement(agree: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """First position t in [lo, hi) where ``agree`` is False, or ``hi`` where there is none.

    agree: (R, T) bool. lo, hi: (R,) long, 0 <= lo <= hi <= T. Returns (R,) long.
    """
    positions = torch.arange(agree.shape[1], device=agree.device)
    inside = (positions >= lo[:, None]) & (positions < hi[:, None])
    mismatch = inside & ~agree
    # argmax returns the first maximal index, so it finds the first mismatch.
    first = mismatch.to(torch.uint8).argmax(dim=1)
    return torch.where(mismatch.any(dim=1), first, hi)
