"""Rows of independent triangular systems under fixed-point iteration: the state of every solver.

A row is one system s_t = f_t(s_{<t}), t < T. The batch holds, per row, the current iterate, how to solve it
(method, block size, tolerance, cap) and how far it got. One call of ``advance`` applies one evaluation of the
step to any subset of rows, so the same state serves the library's ``solve`` loop and a server worker that adds
and removes rows between iterations (iteration-level batching).

Invariants (per row, under exact stopping):
- positions < ``final`` hold the exact solution and are never written again;
- ``final`` grows by at least one per evaluation, so a row is done after at most T evaluations;
- nothing in one row's update reads another row: rows never influence each other.

Reference: Song et al., ICML 2021 (arXiv 2002.03629).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from solvers.convergence import agreement, first_disagreement
from solvers.schedule import Method, default_block_size, read_span, write_mask


@dataclass(frozen=True)
class Schedule:
    """How to solve a row. Every default is the exact, general one."""

    method: str = "jacobi"  # one of solvers.METHODS
    block_size: int | None = None  # jacobi_gs: block length; gs_jacobi: window length; None: ceil(sqrt(T))
    tol: float = 0.0  # 0: exact equality of the iterate and its image; > 0: max-abs agreement within tol
    max_iterations: int | None = None  # cap on evaluations per row; None: T, the bound that guarantees exactness

    def __post_init__(self) -> None:
        Method.parse(self.method)
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1; got {self.block_size}")
        if not self.tol >= 0:  # also rejects NaN
            raise ValueError(f"tol must be >= 0; got {self.tol}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1; got {self.max_iterations}")


class FixedPointBatch:
    """Per-row iterates and counters. x: (R, T, *shape); every counter: (R,)."""

    def __init__(self, length: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.length = length
        self.shape = shape
        self.x = torch.empty((0, length, *shape), dtype=dtype, device=device)

        def empty(kind: torch.dtype = torch.long) -> torch.Tensor:
            return torch.empty(0, dtype=kind, device=device)

        self.method, self.block, self.cap = empty(), empty(), empty()
        self.tol = empty(torch.float64)
        self.iterations = empty()  # evaluations each row has taken part in
        self.final = empty()  # certified prefix length: positions < final are exact
        self.converged = empty(torch.bool)
        self.done = empty(torch.bool)  # converged or out of iterations

    @classmethod
    def start(cls, x0: torch.Tensor, schedule: Schedule) -> FixedPointBatch:
        """A batch holding the rows of x0: (B, T, *shape), the initial guess (copied, never modified)."""
        if x0.dim() < 2:
            raise ValueError(f"x0 must have shape (B, T, *shape); got {tuple(x0.shape)}")
        batch = cls(x0.shape[1], tuple(x0.shape[2:]), x0.dtype, x0.device)
        batch.add(x0, schedule)
        return batch

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def add(self, x0: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        """Append rows with initial guess x0: (N, T, *shape). Returns their indices, (N,) long."""
        expected = (self.length, *self.shape)
        if tuple(x0.shape[1:]) != expected or x0.dtype != self.x.dtype:
            raise ValueError(
                f"rows must have shape (N, {', '.join(map(str, expected))}) and dtype {self.x.dtype}; "
                f"got {tuple(x0.shape)} {x0.dtype}"
            )
        n, device = x0.shape[0], self.x.device
        block = schedule.block_size or default_block_size(self.length)
        cap = self.length if schedule.max_iterations is None else schedule.max_iterations

        def fill(value: float | int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.full((n,), value, dtype=dtype, device=device)

        start = self.rows
        self.x = torch.cat([self.x, x0.detach().to(device)])
        self.method = torch.cat([self.method, fill(int(Method.parse(schedule.method)))])
        self.block = torch.cat([self.block, fill(block)])
        self.cap = torch.cat([self.cap, fill(cap)])
        self.tol = torch.cat([self.tol, fill(schedule.tol, torch.float64)])
        self.iterations = torch.cat([self.iterations, fill(0)])
        self.final = torch.cat([self.final, fill(0)])
        empty_system = self.length == 0
        self.converged = torch.cat([self.converged, fill(empty_system, torch.bool)])
        self.done = torch.cat([self.done, fill(empty_system, torch.bool)])
        return torch.arange(start, self.rows, device=device)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row not in ``rows`` ((N,) long); the kept rows are renumbered 0..N-1 in that order."""
        for name in ("x", "method", "block", "cap", "tol", "iterations", "final", "converged", "done"):
            setattr(self, name, getattr(self, name)[rows])

    def pending(self) -> torch.Tensor:
        """(P,) long, ascending: rows that still need evaluations."""
        return torch.nonzero(~self.done).flatten()

    def span(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[lo, hi) per row: the positions of the next step output the solver reads. (P,), (P,) long."""
        return read_span(self.method[rows], self.iterations[rows], self.final[rows], self.block[rows], self.length)

    def advance(self, rows: torch.Tensor, y: torch.Tensor) -> None:
        """Apply one evaluation. rows: (P,) long, pending rows; y: (P, T, *shape) with y[i] = step(x[rows[i]])."""
        x = self.x[rows]
        if y.shape != x.shape:
            raise ValueError(f"step returned shape {tuple(y.shape)}; expected {tuple(x.shape)}")
        if y.dtype != x.dtype:
            raise TypeError(f"step returned dtype {y.dtype}; expected {x.dtype} (the dtype of x0)")
        lo, hi = self.span(rows)
        tol = self.tol[rows]
        agree = agreement(y, x, tol)
        mismatch = first_disagreement(agree, lo, hi)
        # The first disagreeing position was computed from an exact prefix, so it is final too.
        new_final = torch.where(mismatch < hi, mismatch + 1, hi)
        iterations = self.iterations[rows]
        mask = write_mask(self.method[rows], iterations, self.block[rows], lo, hi, new_final, self.length)
        mask = mask.reshape(*mask.shape, *([1] * len(self.shape)))
        self.x[rows] = torch.where(mask, y, x)
        iterations = iterations + 1
        converged = new_final >= self.length
        self.iterations[rows] = iterations
        self.final[rows] = new_final
        self.converged[rows] = converged
        self.done[rows] = converged | (iterations >= self.cap[rows])
