"""The iteration-level row batch of one model and step: rows of many requests advanced together, one step at a time.

A ``RowGroup`` is a ``solvers.FixedPointBatch`` whose rows belong to different owners, each row with its own fixed
noise, schedule (method, block size, cap) and cache slot, evaluated through one ``samplers.system.SystemStep``.
One ``iterate`` evaluates the model once on every pending row and applies ``FixedPointBatch.advance``: the same
code as ``solvers.solve``, so a row's answer and iteration count are those of the library call. ``harvest`` hands
finished rows to their owners at once and returns the owners that now hold all their rows; the rows themselves
leave the batch (done, so never evaluated again) when admission needs the room or the group empties.

Invariant: sample i of a request depends only on (model, seed, i): rows never read each other and the model steps
are batch invariant (``models.invariance``, ``models.pixelcnnpp_bands``), so the batch's composition cannot
change a single bit of an answer.

Shapes: x (R, T, *unknown_shape) for R rows; noise (R, ...).
"""

from __future__ import annotations

from typing import Protocol

import torch

from samplers.system import SystemStep
from samplers.work import RowSet
from solvers import FixedPointBatch


class RowOwner(Protocol):
    def take(self, index: int, x: torch.Tensor, iterations: int, converged: bool) -> bool:
        """Store one finished row; True once the owner holds all of its rows."""
        ...


class RowGroup:
    """Active rows of one lane (model, step variant). Row r belongs to owners[r] = (owner, index within it)."""

    def __init__(self, rows: RowSet, capacity: int) -> None:
        system = rows.system
        self.system, self.capacity = system, capacity
        self.step = SystemStep(system, rows.plan.evaluate, capacity)
        self.batch = FixedPointBatch(system.unknowns, system.unknown_shape, system.dtype, system.device)
        # owners[r]: (owner, index within it), or None once row r was answered. Answered rows stay in the batch
        # (done, so never evaluated again) until rows are needed: compacting the batch every time a row
        # finishes cost more than the solver's own bookkeeping.
        self.owners: list[tuple[RowOwner, int] | None] = []
        self.answered = 0  # rows whose owner entry is None
        self.pending: torch.Tensor | None = None  # rows still to evaluate, found after the last iteration
        self.free = list(range(capacity))
        self.sealed = False  # static batching: no admission once iterating, until the group empties

    @property
    def rows(self) -> int:
        """Rows still being solved (answered rows waiting for compaction do not count)."""
        return len(self.owners) - self.answered

    def add(self, rows: RowSet, owner: RowOwner, first_index: int = 0) -> None:
        """The rows of ``rows``, owned by ``owner`` as indices first_index .. first_index + n - 1."""
        n = rows.noise.shape[0]
        if self.answered:
            self.compact()
        if n > len(self.free):
            raise RuntimeError(f"{n} rows asked for, {len(self.free)} free")  # admission counts rows first
        x0 = self.system.initial_guess(rows.noise) if rows.x0 is None else rows.x0
        slots = torch.tensor(self.free[-n:], dtype=torch.long)
        self.batch.add(x0, rows.schedule)  # validates first: nothing below runs for rows it refused
        del self.free[-n:]
        self.step.hold(rows.noise, slots)
        self.owners += [(owner, first_index + i) for i in range(n)]
        self.pending = None

    def iterate(self) -> None:
        """One solver iteration of every pending row."""
        rows = self.batch.pending() if self.pending is None else self.pending
        y = self.step(self.batch.x[rows], rows, torch.stack(self.batch.span(rows), dim=1))
        self.batch.advance(rows, y)
        self.pending = self.batch.pending()  # one look at the batch serves harvest and the next iteration
        self.sealed = True

    def remove(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` ((K,) long, in order, none answered); free the cache slots of the others."""
        kept, slots = set(keep.tolist()), self.step.slots.tolist()
        self.free += [slots[r] for r in range(len(self.owners)) if r not in kept]
        self.batch.keep(keep)
        self.step.keep(keep)
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
