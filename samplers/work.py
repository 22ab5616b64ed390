"""Work: a request on its way to its response, in the two shapes a solver can take it.

- ``RowWork`` (sampling): the request is rows of fixed-point systems (``RowSet``s). The library solves each set
  with ``solvers.solve``; the server puts them into the row batch of their lane (``samplers.rows``), beside other
  requests' rows, and advances the batch one iteration at a time. When every row is solved, ``respond`` builds
  the response from them.
- ``SliceWork`` (inference, gradients): the family's own computation as a generator that yields between small
  pieces (``PIECE_ROWS`` rows, ``PIECE_STEPS`` time steps, one scan level); a slice runs pieces for a time budget,
  so a server can interleave it with other work, and stop it between slices (its memory is released).

``run_work`` is the library's (and the CLI's) way through either; the server's worker (``app/worker``) drives
the same objects. Families build them in ``Family.start``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from samplers.requests import Timings
from samplers.system import Plan, SamplingSystem, SystemStep
from solvers import FixedPointBatch, Schedule, SolveResult, solve
from solvers.pieces import drain


@dataclass(frozen=True)
class RowSet:
    """Rows of one request that share a step, solved in the row batch of their ``lane``."""

    lane: tuple[str, str]  # (model, step variant): rows of one lane can share an evaluation
    system: SamplingSystem
    plan: Plan
    noise: torch.Tensor  # (N, ...) fixed noise, one row per system
    schedule: Schedule  # solver method, block size, cap
    x0: torch.Tensor | None = None  # (N, T, *unknown_shape) first guess; None: the system's


@dataclass(frozen=True)
class Solved:
    """The rows of one ``RowSet`` once solved (or capped)."""

    x: torch.Tensor  # (N, T, *unknown_shape)
    iterations: list[int]
    converged: list[bool]


@dataclass(frozen=True)
class Context:
    """How a response came about: for its ``timings_ms`` and ``device`` fields."""

    compute_ms: float
    queue_ms: float = 0.0
    device: str = "cpu"

    def timings(self) -> Timings:
        return Timings(queue=round(self.queue_ms, 3), compute=round(self.compute_ms, 3))


Respond = Callable[[Context], "BaseModel | Work"]
T = TypeVar("T")
Pieces = Generator[Any, None, T]  # a computation that yields between small pieces and returns its result

PIECE_ROWS = 8  # rows (images, sequences) per call in sliced work: the batch-invariant row multiple
PIECE_STEPS = 32  # time steps per piece of a sequential recurrent loop


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> list[bool]:
    """Per row: are rows a[i] and b[i] ((N, ...) each) equal bit for bit?"""
    return (a.cpu() == b.cpu()).flatten(1).all(dim=1).tolist()


@dataclass(frozen=True)
class Check:
    """An answered row, to be solved again by the reference method (one row) and compared bit for bit."""

    rows: RowSet  # one row: the same noise, the reference method
    answer: torch.Tensor  # (T, *unknown_shape) the row that was returned
    label: dict[str, object]  # what reproduces it (model, seed, method, index): logged on a mismatch

    def matches(self, x: torch.Tensor) -> bool:
        return bitwise_equal(x[None], self.answer[None])[0]


class RowWork:
    """Work that is nothing but rows to solve; ``respond`` turns the solved rows into the response (or into the
    next work: certificate rows after a candidate, ``samplers.certify``), and ``checks`` lists answered rows
    worth certifying again (continuous verification)."""

    def __init__(
        self,
        row_sets: list[RowSet],
        respond: Callable[[list[Solved], Context], BaseModel | Work],
        checks: Callable[[list[Solved]], list[Check]] | None = None,
    ) -> None:
        self.row_sets, self._respond, self._checks = row_sets, respond, checks
        self.prior_ms = 0.0  # compute spent by the work this one continues (a fast path's candidate)

    @property
    def rows(self) -> int:
        return sum(int(s.noise.shape[0]) for s in self.row_sets)

    def respond(self, solved: list[Solved], context: Context) -> BaseModel | Work:
        """The response, or the work that continues this one (it carries the compute time spent so far)."""
        context = Context(context.compute_ms + self.prior_ms, context.queue_ms, context.device)
        out = self._respond(solved, context)
        if isinstance(out, RowWork):
            out.prior_ms += context.compute_ms
        return out

    def checks(self, solved: list[Solved]) -> list[Check]:
        return [] if self._checks is None else self._checks(solved)


@dataclass
class SliceWork:
    """Work done in slices: ``pieces`` yields between small pieces and returns how to respond. Its driver runs it
    under ``torch.inference_mode``; no grad-mode context may span one of its yields (the driver's code runs there)."""

    pieces: Pieces[Respond]
    compute_s: float = 0.0  # time spent inside slices so far
    memory: int = 0  # bytes it holds while it runs (its family's estimate; a worker's budget admits by it)
    finished: Respond | None = field(default=None, init=False)
    row_sets: list[RowSet] = field(default_factory=list, init=False)  # none: a lane of its own

    def advance(self, budget_s: float = math.inf) -> bool:
        """Run pieces for ``budget_s`` seconds (at least one piece); True once the work is done (``respond``)."""
        start = time.perf_counter()
        try:
            while True:
                next(self.pieces)
                if time.perf_counter() - start >= budget_s:
                    break
        except StopIteration as stop:
            self.finished = stop.value
        finally:
            self.compute_s += time.perf_counter() - start
        return self.finished is not None

    def respond(self, queue_ms: float = 0.0, device: str = "cpu") -> BaseModel | Work:
        """The response, or the work that continues this one (it carries the compute time spent here)."""
        assert self.finished is not None, "respond() before the last slice"
        out = self.finished(Context(self.compute_s * 1000, queue_ms, device))
        if isinstance(out, RowWork):
            out.prior_ms += self.compute_s * 1000
        return out

    def close(self) -> None:
        """Abandon the work between slices (deadline, client gone, shutdown): its memory is released."""
        self.pieces.close()


Work = RowWork | SliceWork


def solve_rows(rows: RowSet, callback: Callable[[FixedPointBatch], None] | None = None) -> SolveResult:
    """One row set solved on its own by ``solvers.solve`` (the library's path; the server batches instead)."""
    step = SystemStep(rows.system, rows.plan.evaluate, rows.noise.shape[0])
    step.hold(rows.noise, torch.arange(rows.noise.shape[0]))
    x0 = rows.system.initial_guess(rows.noise) if rows.x0 is None else rows.x0
    s = rows.schedule
    return solve(step, x0, s.method, s.max_iterations, s.block_size, s.tol, callback=callback)


@dataclass(frozen=True)
class SystemSolve:
    result: SolveResult
    samples: torch.Tensor  # (N, C, H, W) integer images
    certificate: torch.Tensor | None = None  # a fast path's: (N,) evaluations of the reference map per row


def solve_system(
    system: SamplingSystem,
    noise: torch.Tensor,
    method: str = "jacobi",
    block_size: int | None = None,
    max_iterations: int | None = None,
    x0: torch.Tensor | None = None,
    callback: Callable[[FixedPointBatch], None] | None = None,
) -> SystemSolve:
    """Samples of the given noise rows (N, ...) by a sampler method, solved by ``solvers.solve``."""
    if method not in system.methods:
        raise ValueError(f"method must be one of {', '.join(system.methods)} for {system.name}; got {method!r}")
    plan = system.plan(method)
    if plan.propose is not None:  # a fast path: its candidate, then the certificate rows that make it exact
        from samplers.certify import certificate_rows  # certify builds on this module's RowSet

        candidate, depth = drain(plan.propose(noise, block_size))
        result = solve_rows(certificate_rows(system, noise, candidate), callback)
        certificate = result.iterations.clone()
        result.iterations.add_(torch.tensor(depth, dtype=result.iterations.dtype, device=result.iterations.device))
        return SystemSolve(result, system.decode(result.x), certificate)
    schedule = Schedule(plan.solver_method, block_size or system.block_size, max_iterations=max_iterations)
    result = solve_rows(RowSet((system.name, plan.variant), system, plan, noise, schedule, x0), callback)
    return SystemSolve(result, system.decode(result.x))


def run_work(work: Work, device: str = "cpu", callback: Callable[[FixedPointBatch], None] | None = None) -> BaseModel:
    """Do the work (and the work that continues it) in this thread, start to end, and return its response.
    ``callback`` sees the solver state after every evaluation of the first row set (progress bars)."""
    out: BaseModel | Work = work
    while isinstance(out, RowWork | SliceWork):
        out = _run_once(out, device, callback)
    return out


def _run_once(work: Work, device: str, callback: Callable[[FixedPointBatch], None] | None) -> BaseModel | Work:
    if isinstance(work, SliceWork):
        with torch.inference_mode():
            work.advance()
        return work.respond(device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        results = [solve_rows(s, callback if i == 0 else None) for i, s in enumerate(work.row_sets)]
        solved = [Solved(r.x, r.iterations.tolist(), r.converged.tolist()) for r in results]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return work.respond(solved, Context((time.perf_counter() - start) * 1000, device=device))
