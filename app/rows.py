"""The iteration-level batch of one model: rows of many requests advanced together, one solver step at a time.

A ``RowGroup`` is a ``solvers.FixedPointBatch`` whose rows belong to different owners, each row with its own
fixed noise, schedule (method, block size, cap) and cache slot. One ``iterate`` evaluates the model once on every
pending row and applies ``FixedPointBatch.advance``: the same code as ``solvers.solve``, so a row's answer and
iteration count are those of the library call. ``harvest`` hands finished rows to their owners at once and
returns the owners that now hold all their rows; the rows themselves leave the batch (done, so never evaluated
again) when admission needs the room or the group empties.

Owners:
- ``ActiveSample``: a /sample request. Its rows 0..n-1 are the samples, solved by the requested method; with
  ``verify`` its rows n..2n-1 solve the same noise by the sequential method, as ordinary rows of the batch, so the
  check costs the requester time and nobody else a stalled iteration.
- ``SampleCheck``: continuous verification of one answered sample, re-solved sequentially in a spare row.

Invariant: sample i of a request depends only on (model, seed, i): rows never read each other and the model steps
are batch invariant (``models.invariance``, ``models.pixelcnnpp_bands``), so the batch's composition cannot
change a single bit of an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from app.jobs import Job
from samplers.sampling import PreparedSample
from samplers.system import SamplingSystem
from solvers import FixedPointBatch, Schedule


class RowOwner(Protocol):
    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        """Store one finished row; True once the owner holds all of its rows."""
        ...


@dataclass
class ActiveSample:
    """A sampling job whose rows are in the batch. Row i < size: sample i; size + i: its sequential reference."""

    job: Job
    prepared: PreparedSample
    started: float = field(default_factory=time.perf_counter)
    admitted: float = field(default_factory=time.time)
    rows: dict[int, tuple[torch.Tensor, int, bool]] = field(default_factory=dict)  # index -> (x, iterations, ok)

    @property
    def size(self) -> int:
        return int(self.prepared.noise.shape[0])

    @property
    def row_count(self) -> int:
        return self.size * (2 if self.prepared.verify else 1)

    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        self.rows[index] = (x, iterations, converged)
        return len(self.rows) == self.row_count

    def solved(self) -> tuple[torch.Tensor, list[int], bool]:
        """(decoded samples (N, C, H, W), iterations per sample, all converged)."""
        ordered = [self.rows[i] for i in range(self.size)]
        samples = self.prepared.system.decode(torch.stack([x for x, _, _ in ordered]))
        return samples, [it for _, it, _ in ordered], all(ok for *_, ok in ordered)

    def verified_per_sample(self, samples: torch.Tensor) -> list[bool] | None:
        """Per sample: bitwise equal to its sequential reference row (None when not asked to verify)."""
        if not self.prepared.verify:
            return None
        reference = self.prepared.system.decode(torch.stack([self.rows[self.size + i][0] for i in range(self.size)]))
        return (samples.cpu() == reference.cpu()).flatten(1).all(dim=1).tolist()


@dataclass
class SampleCheck:
    """One answered sample, re-solved by the sequential method in a spare row and compared bit for bit."""

    prepared: PreparedSample
    index: int  # which sample of the request
    answer: torch.Tensor  # (C, H, W) the sample that was returned
    job_id: str
    reference: torch.Tensor | None = None  # (C, H, W) once solved

    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        self.reference = self.prepared.system.decode(x[None])[0]
        return True

    @property
    def equal(self) -> bool:
        return self.reference is not None and torch.equal(self.reference.cpu(), self.answer.cpu())


class RowGroup:
    """Active rows of one model and step variant. Row r belongs to owners[r] = (owner, index within it)."""

    def __init__(self, system: SamplingSystem, evaluate: Callable[..., torch.Tensor], capacity: int) -> None:
        self.system, self.evaluate, self.capacity = system, evaluate, capacity
        self.batch = FixedPointBatch(system.unknowns, system.unknown_shape, system.dtype, system.device)
        self.noise: torch.Tensor | None = None
        self.slots = torch.empty(0, dtype=torch.long)
        # owners[r]: (owner, index within it), or None once row r was answered. Answered rows stay in the batch
        # (done, so never evaluated again) until rows are needed: compacting the batch every time a row
        # finishes cost more than the solver's own bookkeeping.
        self.owners: list[tuple[RowOwner, int] | None] = []
        self.answered = 0  # rows whose owner entry is None
        self.pending: torch.Tensor | None = None  # rows still to evaluate, found after the last iteration
        self.cache = system.new_cache(capacity)
        self.free = list(range(capacity))
        self.sealed = False  # static batching: no admission once iterating, until the group empties

    @property
    def rows(self) -> int:
        """Rows still being solved (answered rows waiting for compaction do not count)."""
        return len(self.owners) - self.answered

    def add(self, noise: torch.Tensor, schedule: Schedule, owner: RowOwner, first_index: int = 0) -> None:
        """Rows for ``noise`` (n, ...), owned by ``owner`` as indices first_index .. first_index + n - 1."""
        n = noise.shape[0]
        if self.answered:
            self.compact()
        if n > len(self.free):
            raise RuntimeError(f"{n} rows asked for, {len(self.free)} free")  # admission counts rows first
        # Everything that can fail first; then the state changes that must stay aligned, together.
        x0 = self.system.initial_guess(noise)
        merged = noise if self.noise is None else torch.cat([self.noise, noise])
        slots = torch.tensor(self.free[-n:], dtype=torch.long)
        self.system.reset(self.cache, slots.to(noise.device))
        self.batch.add(x0, schedule)
        del self.free[-n:]
        self.noise = merged
        self.slots = torch.cat([self.slots, slots])
        self.owners += [(owner, first_index + i) for i in range(n)]
        self.pending = None

    def iterate(self) -> None:
        """One solver iteration of every pending row."""
        assert self.noise is not None
        rows = self.batch.pending() if self.pending is None else self.pending
        span = torch.stack(self.batch.span(rows), dim=1)
        slots = None if self.cache is None else self.slots.to(rows.device)[rows]
        y = self.evaluate(self.batch.x[rows], self.noise[rows], self.cache, slots, span)
        self.batch.advance(rows, y)
        self.pending = self.batch.pending()  # one look at the batch serves harvest and the next iteration
        self.sealed = True

    def remove(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` ((K,) long, in order, none answered); free the cache slots of the others."""
        kept = set(keep.tolist())
        self.free += [int(self.slots[r]) for r in range(len(self.owners)) if r not in kept]
        self.batch.keep(keep)
        assert self.noise is not None
        self.noise = self.noise[keep.to(self.noise.device)]
        self.slots = self.slots[keep.cpu()]
        self.owners = [self.owners[r] for r in keep.tolist()]
        self.answered = 0
        self.pending = None
        if not self.owners:
            self.sealed = False

    def compact(self) -> None:
        """Take the answered rows out of the batch."""
        self.remove(torch.tensor([r for r, o in enumerate(self.owners) if o is not None], dtype=torch.long))

    def harvest(self) -> list[RowOwner]:
        """Answer rows that finished; return the owners this completed (all their rows done), each once."""
        finished: list[RowOwner] = []
        pending = self.pending
        done_rows = int(self.batch.done.sum()) if pending is None else len(self.owners) - int(pending.numel())
        if done_rows == self.answered:  # most iterations finish nobody
            return finished
        done = [r for r in torch.nonzero(self.batch.done).flatten().tolist() if self.owners[r] is not None]
        index = torch.tensor(done, dtype=torch.long, device=self.batch.x.device)
        solved = self.batch.x[index]  # (D, T, *shape), a copy
        iterations, converged = self.batch.iterations[index].tolist(), self.batch.converged[index].tolist()
        for j, r in enumerate(done):
            entry = self.owners[r]
            assert entry is not None
            self.owners[r] = None
            if entry[0].take(entry[1], solved[j], iterations[j], converged[j]):
                finished.append(entry[0])
        self.answered += len(done)
        if self.answered == len(self.owners):
            self.compact()  # all answered: an empty group (static batching may admit again)
        return finished

    def drop(self, owners: list[RowOwner]) -> None:
        """Remove every row of these owners (deadline passed, a failure, shutdown)."""
        gone = {id(o) for o in owners}
        keep = [r for r, entry in enumerate(self.owners) if entry is not None and id(entry[0]) not in gone]
        self.remove(torch.tensor(keep, dtype=torch.long))

    def owners_of_kind(self, kind: type) -> list[RowOwner]:
        """Distinct owners of the given class, in row order."""
        seen: dict[int, RowOwner] = {}
        for entry in self.owners:
            if entry is not None and isinstance(entry[0], kind):
                seen.setdefault(id(entry[0]), entry[0])
        return list(seen.values())
