"""``solve``: exact parallel solution of a batch of lower-triangular systems by fixed-point iteration.

The loop in ``solving`` is the only solver loop in parafeed: the library call, the CLI, the benchmarks and the
server worker all run it (the worker drives the same ``FixedPointBatch`` one evaluation at a time for sampling,
and ``solving`` itself piece by piece for inference, so it can interleave, pause or stop any solve).

Guarantee: with ``tol=0`` every method returns exactly the sequential solution of the *computed* map after at
most T evaluations per row (the confirming one included); rows stop as soon as they are certified, and with a
step that accepts ``rows`` they are not recomputed after that. See ``solvers.convergence`` for the proof.

Reference: Song, Meng, Liao, Ermon, "Accelerating Feedforward Computation via Parallel Nonlinear Equation
Solving", ICML 2021, arXiv 2002.03629.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace

import torch

from solvers.batch import FixedPointBatch, Schedule
from solvers.pieces import drain
from solvers.result import SolveResult
from solvers.step import Step, StepCaller


def solving(
    step: Step,
    x0: torch.Tensor,
    method: str = "jacobi",
    max_iterations: int | None = None,
    block_size: int | None = None,
    tol: float = 0.0,
    rows_per_call: int | None = None,
) -> Generator[FixedPointBatch, None, SolveResult]:
    """``solve``, one piece at a time: yields the batch state after every call of ``step``, returns the result.

    rows_per_call: with a step that accepts ``rows``, evaluate the pending rows of each iteration in groups of
    this many (rows are independent, so a group is certified on its own); the caller can stop or pause between
    groups (a server's bounded slices). None: all pending rows in one call.
    """
    schedule = Schedule(method=method, block_size=block_size, tol=tol, max_iterations=max_iterations)
    batch = FixedPointBatch.start(x0, schedule)
    call = StepCaller(step)
    group = rows_per_call if rows_per_call and call.takes_rows else None
    evaluations = 0
    while (pending := batch.pending()).numel() > 0:
        for rows in torch.split(pending, group) if group else (pending,):
            # One parallel step: every pending row evaluates all its equations on its current iterate...
            y = call(batch.x, rows, batch.span(rows))
            # ...then certifies its consistent prefix and writes the positions its method updates.
            batch.advance(rows, y)
            yield batch
        evaluations += 1
    return SolveResult(
        x=batch.x,
        iterations=batch.iterations,
        converged=batch.converged,
        evaluations=evaluations,
        final=batch.final,
        method=method,
        block_size=int(batch.block[0]) if batch.rows else 0,
    )


def solve(
    step: Step,
    x0: torch.Tensor,
    method: str = "jacobi",
    max_iterations: int | None = None,
    block_size: int | None = None,
    tol: float = 0.0,
    *,
    callback: Callable[[FixedPointBatch], None] | None = None,
) -> SolveResult:
    """Solve y[:, t] = f_t(x[:, :t]) for x, starting from the guess x0: (B, T, *shape).

    step: evaluates all T equations on an iterate (see ``solvers.step`` for the optional ``rows``/``span``).
    method: "sequential" | "jacobi" | "jacobi_gs" | "gs_jacobi" (see ``solvers.schedule``).
    max_iterations: cap on evaluations per row; rows that hit it report ``converged=False``. None: T.
    block_size: block length for jacobi_gs, window length for gs_jacobi; None: ceil(sqrt(T)).
    tol: 0 for exact equality; > 0 accepts agreement within tol (max abs) for continuous unknowns.
    callback: called with the batch state after every evaluation (progress bars, snapshots, statistics).
    """
    return drain(solving(step, x0, method, max_iterations, block_size, tol), callback)


def solving_backward(
    step: Step,
    x0: torch.Tensor,
    method: str = "jacobi",
    max_iterations: int | None = None,
    block_size: int | None = None,
    tol: float = 0.0,
) -> Generator[FixedPointBatch, None, SolveResult]:
    """``solve_backward``, one evaluation at a time (the batch state it yields is the time-reversed one)."""

    def reversed_step(x_rev: torch.Tensor) -> torch.Tensor:
        return step(x_rev.flip(1)).flip(1)

    result = yield from solving(reversed_step, x0.flip(1), method, max_iterations, block_size, tol)
    return replace(result, x=result.x.flip(1))


def solve_backward(
    step: Step,
    x0: torch.Tensor,
    method: str = "jacobi",
    max_iterations: int | None = None,
    block_size: int | None = None,
    tol: float = 0.0,
) -> SolveResult:
    """Solve an upper-triangular system y[:, t] = f_t(x[:, t+1:]) (backpropagation runs this way) for x.

    The same solver on the time-reversed system: ``step`` sees and returns tensors in the original order, and so
    does the result; ``final`` then counts the certified *suffix* (positions >= T - final are exact).
    step must accept the whole batch (no ``rows``): x0: (B, T, *shape).
    """
    return drain(solving_backward(step, x0, method, max_iterations, block_size, tol))
