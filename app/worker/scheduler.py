"""Admission: which waiting job may start now. Arrival order, the row budget, static batching, deadlines.

Jobs wait here once a worker fetched them and started their work (``samplers.work``): a job with rows needs that
many free rows of the batch; a job done in slices needs none. Jobs are admitted in arrival order while rows are
free. A job waiting for rows keeps its place and no row job overtakes it; a job whose lane is sealed (static
batching: a batch admits only when empty) waits without blocking the others; a job past its deadline is answered
504 instead. At most one sliced job is admitted per turn, so the batch's iterations keep going between them.

No torch here: the scheduler sees row counts and lane names, never tensors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from app.jobs import Job


@dataclass(frozen=True)
class Waiting:
    job: Job
    work: Any  # the work that answers it (opaque here)
    rows: int  # batch rows it needs; 0: done in slices
    lanes: tuple[Hashable, ...]  # the row batches its rows go to


@dataclass(frozen=True)
class Admission:
    start: list[Waiting]  # admit these now, in this order
    expired: list[Waiting]  # answer these 504


class Scheduler:
    def __init__(self, max_rows: int, static: bool) -> None:
        self.max_rows, self.static = max_rows, static
        self.waiting: deque[Waiting] = deque()

    def add(self, waiting: Waiting) -> None:
        self.waiting.append(waiting)

    def waiting_rows(self) -> int:
        return sum(w.rows for w in self.waiting)

    def free_rows(self, active_rows: int) -> int:
        """Rows neither solving nor promised to a job that waits for them."""
        return self.max_rows - active_rows - self.waiting_rows()

    def wants_jobs(self, active_rows: int) -> bool:
        """Rows are free and no sliced job is already waiting to run (a worker never hoards what others could
        run)."""
        return self.free_rows(active_rows) > 0 and not any(w.rows == 0 for w in self.waiting)

    def admit(self, active_rows: int, sealed: Callable[[Hashable], bool]) -> Admission:
        """Take out what may start now; the others keep their places."""
        start, expired, kept = [], [], deque[Waiting]()
        sliced, waiting_for_rows, rows = False, False, active_rows
        while self.waiting:
            w = self.waiting.popleft()
            if w.job.expired:
                expired.append(w)
            elif w.rows == 0:
                if sliced:
                    kept.append(w)
                else:
                    start.append(w)
                    sliced = True
            elif waiting_for_rows or rows + w.rows > self.max_rows:
                waiting_for_rows = True
                kept.append(w)
            elif self.static and any(sealed(lane) for lane in w.lanes):
                kept.append(w)
            else:
                start.append(w)
                rows += w.rows
        self.waiting = kept
        return Admission(start, expired)

    def take_all(self) -> list[Waiting]:
        """Everything still waiting (shutdown hands it back)."""
        taken = list(self.waiting)
        self.waiting.clear()
        return taken
