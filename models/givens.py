"""Orthogonal matrices as products of Givens rotations, computed in round-robin rounds (Hamze, "Parallelized
Computation and Backpropagation Under Angle-Parametrized Orthogonal Matrices", arXiv 2106.00003).

An n x n special orthogonal matrix is written as a product of n(n-1)/2 Givens rotations, one per index pair.
Rotations on disjoint pairs commute, and the circle method of round-robin tournaments (an edge colouring of the
complete graph K_n; n odd gets a dummy index) splits the pairs into n-1 rounds of n/2 disjoint pairs (n odd: n
rounds of (n-1)/2). A round is one batched 2 x 2 rotation of row pairs, so U is built in n-1 parallel steps.

Conventions. ``G(i, j, t)`` (i < j) acts on rows i and j: row_i <- cos t row_i - sin t row_j, row_j <- sin t row_i
+ cos t row_j. Angles are stored round by round (``Schedule.pairs`` order). U = R_K ... R_2 R_1, R_k the product
of round k's rotations, so round 1 is applied first; ``rotate(x)`` gives U x (rounds 1..K on the coordinates of x)
and ``rotate(x, transpose=True)`` U^T x (rounds K..1, angles negated). Every U has det +1: the parametrization covers
SO(n), not the reflections (multiply a row by -1 outside the layer for those).

Gradients (``GivensMatrix.backward``, the paper's algorithm): walking the rounds backwards, U_{k-1} = R_k^T U_k is
recovered by one inverse round (nothing is stored but U), the upstream gradient moves as G_{k-1} = R_k^T G_k, and
the angle of pair (i, j) in round k gets g_i . (-s u_i - c u_j) + g_j . (c u_i - s u_j), with g rows of G_k and u
rows of U_{k-1}: four length-n dot products per pair. That is n-1 sequential rounds of O(log n)-depth reductions,
the O(n log n) depth the paper states (O(n^3) work, as one matrix product), instead of autograd recording
n(n-1)/2 rotations.

Shapes: angles (n(n-1)/2,); U (n, n); x (..., n).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import torch
from torch import nn


@dataclass(frozen=True)
class Schedule:
    """Round-robin rounds: ``rounds[k]`` = (i, j) index tensors (i < j) of round k's disjoint pairs."""

    n: int
    rounds: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Every pair once, in angle order (round by round)."""
        return [(int(a), int(b)) for i, j in self.rounds for a, b in zip(i, j, strict=True)]

    @property
    def offsets(self) -> list[int]:
        """Where each round's angles start in the angle vector (and the total at the end)."""
        out = [0]
        for i, _ in self.rounds:
            out.append(out[-1] + int(i.numel()))
        return out


@cache
def round_robin(n: int) -> Schedule:
    """The circle method: player ``m - 1`` stays, the others turn; ``m`` = n rounded up to even (the dummy index
    of odd n sits out). Round r pairs (m-1, r) and ((r + k) mod (m-1), (r - k) mod (m-1)) for k = 1 .. m/2 - 1."""
    if n < 2:
        raise ValueError(f"n must be >= 2; got {n}")
    m = n + n % 2
    rounds = []
    for r in range(m - 1):
        pairs = [(m - 1, r)] + [((r + k) % (m - 1), (r - k) % (m - 1)) for k in range(1, m // 2)]
        kept = sorted((min(a, b), max(a, b)) for a, b in pairs if max(a, b) < n)
        rounds.append((torch.tensor([a for a, _ in kept]), torch.tensor([b for _, b in kept])))
    return Schedule(n, tuple(rounds))


def rotate_rows(m: torch.Tensor, i: torch.Tensor, j: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One round on the rows of ``m`` (n, ...), in place (no autograd): rows i <- c m_i - s m_j, rows j <- s m_i +
    c m_j. Returns ``m``."""
    shape = (-1,) + (1,) * (m.dim() - 1)
    c, s = c.reshape(shape), s.reshape(shape)
    mi, mj = m[i], m[j]
    m[i] = c * mi - s * mj
    m[j] = s * mi + c * mj
    return m


def rotate_coordinates(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, c: torch.Tensor, s: torch.Tensor
                       ) -> torch.Tensor:  # fmt: skip
    """One round on the last axis of ``x`` (..., n), out of place (autograd records a handful of ops)."""
    xi, xj = x[..., i], x[..., j]
    return x.index_copy(-1, i, c * xi - s * xj).index_copy(-1, j, s * xi + c * xj)


def build(angles: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """U from its angles, round by round, without recording a graph."""
    offsets = schedule.offsets
    u = torch.eye(schedule.n, dtype=angles.dtype, device=angles.device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    for k, (i, j) in enumerate(schedule.rounds):
        lo, hi = offsets[k], offsets[k + 1]
        u = rotate_rows(u, i.to(u.device), j.to(u.device), cos[lo:hi], sin[lo:hi])
    return u


def angle_gradient(angles: torch.Tensor, u: torch.Tensor, grad: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """dL/d(angles) from U = ``build(angles)`` and dL/dU = ``grad``: the rounds walked backwards (module doc)."""
    offsets = schedule.offsets
    cos, sin = torch.cos(angles), torch.sin(angles)
    out = torch.empty_like(angles)
    u, grad = u.clone(), grad.clone()  # walked backwards in place
    for k in range(len(schedule.rounds) - 1, -1, -1):
        i, j = (t.to(u.device) for t in schedule.rounds[k])
        lo, hi = offsets[k], offsets[k + 1]
        c, s = cos[lo:hi], sin[lo:hi]
        u = rotate_rows(u, i, j, c, -s)  # U_{k-1} = R_k^T U_k
        gi, gj, ui, uj = grad[i], grad[j], u[i], u[j]
        out[lo:hi] = -s * _dot(gi, ui) - c * _dot(gi, uj) + c * _dot(gj, ui) - s * _dot(gj, uj)
        grad = rotate_rows(grad, i, j, c, -s)  # G_{k-1} = R_k^T G_k
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of (k, n) rows: reductions of length n, the O(log n) part of a round."""
    return (a * b).sum(dim=1)


def givens_matrix(angles: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """U(angles), differentiable through the round-robin backward."""
    return cast(torch.Tensor, GivensMatrix.apply(angles, schedule))  # type: ignore[no-untyped-call]


class GivensMatrix(torch.autograd.Function):
    """U(angles) with the round-robin backward (``angle_gradient``)."""

    @staticmethod
    def forward(ctx: Any, angles: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        u = build(angles.detach(), schedule)
        ctx.schedule = schedule
        ctx.save_for_backward(angles, u)
        return u

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        angles, u = ctx.saved_tensors
        return angle_gradient(angles.detach(), u, grad, ctx.schedule), None


class Givens(nn.Module):
    """An n x n special orthogonal matrix parametrized by n(n-1)/2 angles in round-robin order."""

    def __init__(self, n: int, init_scale: float = 0.0) -> None:
        super().__init__()
        self.n = n
        self.schedule = round_robin(n)
        count = n * (n - 1) // 2
        self.angles = nn.Parameter(torch.randn(count) * init_scale if init_scale else torch.zeros(count))

    @property
    def rounds(self) -> int:
        return len(self.schedule.rounds)

    def matrix(self) -> torch.Tensor:
        """U (n, n) in ``rounds`` batched steps; differentiable (round-robin backward)."""
        return givens_matrix(self.angles, self.schedule)

    def rotate(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """U x (or U^T x) for x (..., n) without forming U, in ``rounds`` steps (autograd through the rounds)."""
        offsets, angles = self.schedule.offsets, self.angles
        order = range(self.rounds - 1, -1, -1) if transpose else range(self.rounds)
        for k in order:
            i, j = (t.to(x.device) for t in self.schedule.rounds[k])
            theta = angles[offsets[k] : offsets[k + 1]]
            x = rotate_coordinates(x, i, j, torch.cos(theta), -torch.sin(theta) if transpose else torch.sin(theta))
        return x

    def sequential_matrix(self, count: int | None = None) -> torch.Tensor:
        """The definition, one rotation at a time in angle order: the naive sequential product (autograd records
        every rotation). Equal to ``matrix()`` bit for bit: rotations within a round commute, and each element
        sees the same two products and one sum either way. ``count``: only the first ``count`` rotations (what a
        benchmark times of a product too long to run whole)."""
        cos, sin = torch.cos(self.angles), torch.sin(self.angles)
        u = torch.eye(self.n, dtype=self.angles.dtype, device=self.angles.device)
        for p, (a, b) in enumerate(self.schedule.pairs[:count]):
            ua, ub = u[a].clone(), u[b].clone()
            u[a] = cos[p] * ua - sin[p] * ub
            u[b] = sin[p] * ua + cos[p] * ub
        return u


def fit_angles(target: torch.Tensor, schedule: Schedule, tol: float = 1e-12, restarts: int = 20,
               seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Angles whose round-robin product is ``target`` (n, n) in SO(n), by Levenberg-Marquardt on U(angles) -
    target from random starts (float64; the Jacobian comes from the round-robin backward). Raises if no start
    converges. Small n: the Jacobian is (n^2, n(n-1)/2)."""
    target = target.double()
    count = schedule.n * (schedule.n - 1) // 2
    generator = torch.Generator().manual_seed(seed)

    def residual(angles: torch.Tensor) -> torch.Tensor:
        return (givens_matrix(angles, schedule) - target).flatten()

    for _ in range(restarts):
        angles = (torch.rand(count, generator=generator, dtype=torch.float64) * 2 - 1) * torch.pi
        damping = 1e-3
        r = residual(angles)
        for _ in range(200):
            if float(r.norm()) < tol:
                return angles
            jac = torch.autograd.functional.jacobian(residual, angles)  # type: ignore[no-untyped-call]
            step = torch.linalg.solve(jac.T @ jac + damping * torch.eye(count, dtype=torch.float64), jac.T @ r)
            trial = angles - step
            r_trial = residual(trial)
            if r_trial.norm() < r.norm():
                angles, r, damping = trial, r_trial, max(damping / 10, 1e-15)
            else:
                damping *= 10
                if damping > 1e8:
                    break
    raise ValueError("no angles found: is the target special orthogonal (det +1)?")
