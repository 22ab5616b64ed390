"""Admission: which waiting job may start now. Arrival order, the row and memory budgets, static batching,
deadlines and cancellations.

Jobs wait here once a worker fetched them and started their work (``samplers.work``): a job with rows needs that
many free rows of the batch; a job done in slices needs its estimated memory within the worker's budget. Jobs are
admitted in arrival order. A row job waiting for rows keeps its place and no row job overtakes it; a sliced job
waiting for memory keeps its place and no sliced job overtakes it (the two budgets are separate resources); a job
whose lane is sealed (static batching: a batch admits only when empty) waits without blocking the others. A job
past its deadline is answered 504 instead, one whose caller went away 499.

No torch here: the scheduler sees row counts, byte counts and lane names, never tensors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from app.errors import GONE, LATE
from app.jobs import Job


@dataclass(frozen=True)
class Waiting:
    job: Job
    work: Any  # the work that answers it (opaque here)
    rows: int  # batch rows it needs; 0: done in slices
    memory: int  # bytes it holds while it runs (its family's estimate)
    lanes: tuple[Hashable, ...]  # the row batches its rows go to


@dataclass(frozen=True)
class Admission:
    start: list[Waiting]  # admit these now, in this order
    dropped: list[tuple[Waiting, int]]  # answer these with this status (504, 499)


class Scheduler:
    def __init__(self, max_rows: int, max_memory: int, static: bool) -> None:
        self.max_rows, self.max_memory, self.static = max_rows, max_memory, static
        self.waiting: deque[Waiting] = deque()

    def add(self, waiting: Waiting, first: bool = False) -> None:
        """Queue a job at the back (arrival order), or ``first`` (a job whose work continues: admitted once)."""
        if first:
            self.waiting.appendleft(waiting)
        else:
            self.waiting.append(waiting)

    def free_rows(self, active_rows: int) -> int:
        """Rows neither solving nor promised to a job that waits for them."""
        return self.max_rows - active_rows - sum(w.rows for w in self.waiting)

    def wants_jobs(self, active_rows: int) -> bool:
        """Rows are free and no sliced job is already waiting (a worker never hoards what others could run)."""
        return self.free_rows(active_rows) > 0 and not any(w.rows == 0 for w in self.waiting)

    def admit(
        self, active_rows: int, active_memory: int, sealed: Callable[[Hashable], bool], gone: Callable[[Job], bool]
    ) -> Admission:
        """Take out what may start now; the others keep their places."""
        start, dropped, kept = [], [], deque[Waiting]()
        rows, memory, blocked_rows, blocked_slices = active_rows, active_memory, False, False
        while self.waiting:
            w = self.waiting.popleft()
            if w.job.expired or gone(w.job):
                dropped.append((w, LATE if w.job.expired else GONE))
            elif w.rows == 0:  # sliced: the memory budget (a job alone always fits: it was checked on its own)
                if blocked_slices or (memory > 0 and memory + w.memory > self.max_memory):
                    blocked_slices = True
                    kept.append(w)
                else:
                    start.append(w)
                    memory += w.memory
            elif blocked_rows or rows + w.rows > self.max_rows:
                blocked_rows = True
                kept.append(w)
            elif self.static and any(sealed(lane) for lane in w.lanes):
                kept.append(w)
            else:
                start.append(w)
                rows += w.rows
        self.waiting = kept
        return Admission(start, dropped)

    def take_all(self) -> list[Waiting]:
        """Everything still waiting (shutdown hands it back)."""
        taken = list(self.waiting)
        self.waiting.clear()
        return taken
