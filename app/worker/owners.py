"""Who owns rows in the worker's row batches: a request's work (``Active``) or a background check (``SpotCheck``).

``Active`` is a ``samplers.work.RowWork`` whose row sets sit in the row batches of their lanes: row ``offset(i) + j``
of the owner is row j of set i. When every row is back, the loop asks the work for its response. A ``SpotCheck``
is one answered row solved again by the reference method in a spare row (continuous verification).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from app.jobs import Job
from samplers.work import Check, RowWork, Solved


@dataclass
class Active:
    """A job whose rows are in the batch."""

    job: Job
    work: RowWork
    started: float = field(default_factory=time.perf_counter)
    admitted: float = field(default_factory=time.time)
    rows: dict[int, tuple[torch.Tensor, int, bool]] = field(default_factory=dict)  # index -> (x, iterations, ok)

    def __post_init__(self) -> None:
        sizes = [int(s.noise.shape[0]) for s in self.work.row_sets]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.sizes = sizes

    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        self.rows[index] = (x, iterations, converged)
        return len(self.rows) == sum(self.sizes)

    def solved(self) -> list[Solved]:
        """Every row set, solved, in order."""
        out = []
        for offset, size in zip(self.offsets, self.sizes, strict=True):
            rows = [self.rows[offset + j] for j in range(size)]
            out.append(Solved(torch.stack([x for x, _, _ in rows]), [it for _, it, _ in rows], [ok for *_, ok in rows]))
        return out


@dataclass
class SpotCheck:
    """One answered row, re-solved by the reference method in a spare row and compared bit for bit."""

    check: Check
    job_id: str
    equal: bool | None = None  # once solved

    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        self.equal = self.check.matches(x)
        return True
