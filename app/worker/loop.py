"""The worker loop: iteration-level (continuous) batching across requests, through the family protocol alone.

A fetched job becomes work at once (``Engine.start``: the family checks it against this worker's limits and
builds it). Row work (sampling) puts its row sets into the row batch of their lane (``samplers.rows.RowGroup``,
one per model and step variant); sliced work (inference, gradients) runs in slices. Every turn of the loop:
1. beat, then fetch jobs while rows are free (a source hands out at most as many jobs as there are free rows,
   and no more than one sliced job ahead, so a worker never hoards what others could run);
2. admit waiting jobs (``app.worker.scheduler``); spare rows, up to ``verify_rows``, take background checks;
3. advance every lane by one solver iteration (the same ``FixedPointBatch`` code as ``solvers.solve``);
4. answer finished work; a request is answered the moment its last row is done.
Steps 3-4 repeat within the turn while nobody could be admitted anyway (no row finished, no job ready for free
rows, at most ``turn_ms``), so the bookkeeping of steps 1-2 is paid once per several iterations.
Nobody waits for somebody else's slow sample. ``batching="static"`` is the batch-synchronous baseline: a lane
admits only when empty and answers only when every row is done.

Invariant: sample i of a request depends only on (model, seed, i) (see ``samplers.rows``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import torch

from app import metrics
from app.jobs import Job
from app.queues import WorkSource
from app.settings import Settings
from app.worker.owners import Active, SpotCheck
from app.worker.replies import Replies
from app.worker.scheduler import Scheduler, Waiting
from samplers.engine import Engine
from samplers.requests import REQUESTS
from samplers.rows import RowGroup, RowOwner
from samplers.work import RowSet, RowWork, SliceWork

log = logging.getLogger("parafeed.worker")


class Worker:
    def __init__(self, engine: Engine, source: WorkSource, settings: Settings, name: str = "worker") -> None:
        self.engine, self.source, self.settings, self.name = engine, source, settings, name
        self.lanes: dict[Any, RowGroup] = {}  # (model, step variant) -> its row batch
        self.scheduler = Scheduler(settings.max_batch_rows, settings.batching == "static")
        self.checks: deque[SpotCheck] = deque()  # answered rows waiting for a background re-solve
        self.replies = Replies(source, settings, engine.device.type)
        self.stop = threading.Event()
        self.static = settings.batching == "static"
        self.next_expiry_check = 0.0
        self.occupancy_of: dict[str, Any] = {}

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("worker started", extra={"worker": self.name, "device": str(self.engine.device)})
        while not self.stop.is_set():
            try:
                self.turn()
            except Exception:  # one bad turn must not end the worker: log it and carry on
                log.exception("worker turn failed")
                time.sleep(0.1)
        self.drain()

    def turn(self) -> None:
        """One turn: beat, fetch and admit, then solver iterations of every lane, answering what finished."""
        self.source.beat()
        idle = not self.active_rows() and not self.scheduler.waiting
        fetched = self.fetch(0.25 if idle else 0.0)
        if fetched and idle and self.settings.batch_wait_s > 0:  # give a batch a moment to form
            time.sleep(self.settings.batch_wait_s)
            self.fetch(0.0)
        if self.scheduler.waiting:
            self.admit()
        if self.checks:
            self.admit_checks()
        room = self.scheduler.wants_jobs(self.active_rows())
        self.source.ready(int(room))  # admission may have used the last free rows: no read-ahead
        ends = time.monotonic() + self.settings.turn_ms / 1000
        with torch.inference_mode():
            # Rows leave the batch only when one finishes, which ends this loop: the room stays what it was.
            while self.iterate_all() and not self.stop.is_set() and time.monotonic() < ends:
                if room and self.source.ready(1):
                    break
        if time.monotonic() >= self.next_expiry_check:
            self.next_expiry_check = time.monotonic() + self.settings.expiry_check_ms / 1000
            self.expire()

    def iterate_all(self) -> bool:
        """One solver iteration of every lane with rows; True if some were iterated and none finished."""
        stepped, finished = False, False
        for key, group in self.lanes.items():
            if group.rows:
                self.occupancy(key[0]).observe(group.rows / self.settings.max_batch_rows)
                self.safely(group)
                finished |= self.finish(group)
                stepped = True
        return stepped and not finished

    def occupancy(self, model: str) -> Any:
        """The occupancy histogram of one model (label lookups cost more than the observation)."""
        child = self.occupancy_of.get(model)
        if child is None:
            child = self.occupancy_of[model] = metrics.OCCUPANCY.labels(model)
        return child

    def active_rows(self) -> int:
        return sum(group.rows for group in self.lanes.values())

    # -- jobs in --------------------------------------------------------------------------------------------
    def fetch(self, timeout: float) -> int:
        """Take jobs one at a time while rows are free (a job's size is known only once read) and no sliced job
        is already waiting. Returns how many were taken."""
        count = 0
        while self.scheduler.wants_jobs(self.active_rows()):
            jobs = self.source.fetch(1, timeout if count == 0 else 0.0)
            if not jobs:
                break
            for job in jobs:
                self.receive(job)
            count += len(jobs)
        if count == 0 and timeout > 0 and self.scheduler.free_rows(self.active_rows()) <= 0:
            time.sleep(min(timeout, 0.01))
        return count

    def receive(self, job: Job) -> None:
        """Check the job against this worker's limits and start its work; a job that cannot start is answered."""
        try:
            request = REQUESTS[job.kind].model_validate(job.payload)
            self.engine.check(job.kind, request, self.settings.limits)
            work = self.engine.start(job.kind, request)
        except Exception as error:
            self.replies.fail(job, error)
            return
        rows = work.rows if isinstance(work, RowWork) else 0
        self.scheduler.add(Waiting(job, work, rows, tuple(s.lane for s in work.row_sets)))

    def admit(self) -> None:
        admission = self.scheduler.admit(
            self.active_rows(), lambda lane: lane in self.lanes and self.lanes[lane].sealed
        )
        for waiting in admission.expired:
            self.replies.error(waiting.job, 504, "deadline passed before the job started")
        for waiting in admission.start:
            metrics.QUEUE_WAIT.labels(waiting.job.kind).observe(max(time.time() - waiting.job.submitted, 0.0))
            if isinstance(waiting.work, SliceWork):
                self.run_slices(waiting.job, waiting.work)
            else:
                self.place(Active(waiting.job, waiting.work))

    def lane(self, rows: RowSet) -> RowGroup:
        """The row batch of a lane (created on first use)."""
        group = self.lanes.get(rows.lane)
        if group is None:
            group = self.lanes[rows.lane] = RowGroup(rows, self.settings.max_batch_rows)
        return group

    def place(self, active: Active) -> None:
        """All rows of a job into their lanes, or none (never half a request in the batch)."""
        try:
            for offset, rows in zip(active.offsets, active.work.row_sets, strict=True):
                self.lane(rows).add(rows, active, offset)
        except Exception as error:
            self.drop([active])
            self.replies.fail(active.job, error)

    def admit_checks(self) -> None:
        """Continuous verification: spare rows (never more than ``verify_rows``, never while a job waits) re-solve
        answered rows by the reference method."""
        while self.checks and not self.scheduler.waiting and self.scheduler.free_rows(self.active_rows()) > 0:
            held = sum(len(g.owners_of_kind(SpotCheck)) for g in self.lanes.values())
            if held >= self.settings.verify_rows:
                return
            group = self.lane(self.checks[0].check.rows)
            if self.static and group.sealed:
                return
            spot = self.checks.popleft()
            group.add(spot.check.rows, spot)

    def run_slices(self, job: Job, work: SliceWork) -> None:
        """Sliced work, run to the end within this turn."""
        queue_ms = max(time.time() - job.submitted, 0.0) * 1000
        try:
            while not work.advance():
                pass
            self.replies.ok(job, work.respond(queue_ms, self.engine.device.type))
        except Exception as error:
            self.replies.fail(job, error)

    # -- answers --------------------------------------------------------------------------------------------
    def finish(self, group: RowGroup) -> bool:
        """Answer the owners whose rows are all done; True if rows were freed."""
        if self.static and not bool(group.batch.done.all()):
            return False  # batch-synchronous: everybody waits for the slowest row
        before = group.rows
        for owner in group.harvest():
            if isinstance(owner, Active):
                self.reply(owner)
            elif isinstance(owner, SpotCheck):
                self.replies.record_check(owner)
        return group.rows < before

    def reply(self, active: Active) -> None:
        solved = active.solved()
        checks = self.replies.answer_rows(active, solved)
        room = self.settings.verify_queue - len(self.checks)
        self.checks.extend(SpotCheck(check, active.job.id) for check in checks[: max(room, 0)])
        self.replies.dropped_checks(active.job, len(checks) - max(room, 0))

    def drop(self, owners: list[RowOwner]) -> None:
        """Remove these owners' rows from every lane (a request's reference rows may sit in another)."""
        for group in self.lanes.values():
            group.drop(owners)

    def safely(self, group: RowGroup) -> None:
        """A failure inside a shared iteration fails the lane's jobs, never the worker."""
        try:
            group.iterate()
        except Exception:
            log.exception("iteration failed; failing the jobs of this lane")
            failed = group.owners_of_kind(Active)
            self.drop([*failed, *group.owners_of_kind(SpotCheck)])
            for active in failed:
                assert isinstance(active, Active)
                self.replies.error(active.job, 500, "internal error while solving")

    def in_lanes(self) -> list[Active]:
        """Every job with rows in the batch, once."""
        owners: dict[str, Active] = {}
        for group in self.lanes.values():
            for owner in group.owners_of_kind(Active):
                assert isinstance(owner, Active)
                owners[owner.job.id] = owner
        return list(owners.values())

    def expire(self) -> None:
        """Rows of requests whose deadline passed are dropped: nobody waits for them."""
        late = [active for active in self.in_lanes() if active.job.expired]
        if late:
            self.drop(list(late))
            for active in late:
                self.replies.error(active.job, 504, "deadline passed while solving")

    # -- shutdown -------------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Finish rows in flight within the drain timeout; hand back whatever is left (and all waiting jobs)."""
        for waiting in self.scheduler.take_all():
            self.source.release(waiting.job)
        self.checks.clear()
        for group in self.lanes.values():
            group.drop(group.owners_of_kind(SpotCheck))
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self.active_rows() and time.monotonic() < deadline:
            self.source.beat()
            with torch.inference_mode():
                for group in self.lanes.values():
                    if group.rows:
                        self.safely(group)
                        self.finish(group)
        left = self.in_lanes()
        self.drop(list(left))
        for active in left:
            self.source.release(active.job)
        log.info("worker stopped", extra={"worker": self.name})
