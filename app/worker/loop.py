"""The worker loop: iteration-level (continuous) batching across requests, through the family protocol alone.

A fetched job becomes work at once (``Engine.start``: the family checks it against this worker's limits and
builds it). Row work (sampling) puts its row sets into the row batch of their lane (``samplers.rows.RowGroup``,
one per model and step variant); sliced work (inference, gradients) joins the slice lane of its task and model
(``app.worker.lanes``). Every turn of the loop:
1. beat, then fetch jobs while rows are free (a source hands out at most as many jobs as there are free rows,
   and no more than one sliced job ahead, so a worker never hoards what others could run);
2. admit waiting jobs (``app.worker.scheduler``); spare rows, up to ``verify_rows``, take background checks;
3. step the lanes, in the order and for the time deficit round robin gives them (``app.worker.fair``): a row
   lane's step is one solver iteration of all its rows (the same ``FixedPointBatch`` code as ``solvers.solve``),
   a slice lane's step one slice of one job;
4. answer finished work; a request is answered the moment its last row (or slice) is done.
Steps 3-4 repeat within the turn while nobody could be admitted anyway (nothing finished, no job ready for free
rows, at most ``turn_ms``), so the bookkeeping of steps 1-2 is paid once per several steps. Every
``expiry_check_ms`` jobs past their deadline (504) or abandoned by their caller (499) are dropped, rows, slices
and memory alike. Nobody waits for somebody else's slow sample or long gradient. ``batching="static"`` is the
batch-synchronous baseline: a row lane admits only when empty and answers only when every row is done.

Invariant: sample i of a request depends only on (model, seed, i) (see ``samplers.rows``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Any

import torch

from app import metrics
from app.errors import GONE, LATE
from app.jobs import Job
from app.queues import WorkSource
from app.settings import Settings
from app.worker.fair import DeficitRoundRobin
from app.worker.lanes import Sliced, SliceLane
from app.worker.owners import Active, SpotCheck
from app.worker.replies import Replies
from app.worker.scheduler import Scheduler, Waiting
from samplers.engine import Engine
from samplers.requests import REQUESTS
from samplers.rows import RowGroup, RowOwner
from samplers.work import RowSet, RowWork, SliceWork, Work

log = logging.getLogger("parafeed.worker")


class Worker:
    def __init__(self, engine: Engine, source: WorkSource, settings: Settings, name: str = "worker") -> None:
        self.engine, self.source, self.settings, self.name = engine, source, settings, name
        self.lanes: dict[Any, RowGroup] = {}  # (model, step variant) -> its row batch
        self.sliced: dict[Any, SliceLane] = {}  # ("slices", task, model) -> its sliced jobs
        self.fair = DeficitRoundRobin(settings.quantum_ms / 1000)
        self.static = settings.batching == "static"
        self.scheduler = Scheduler(settings.max_batch_rows, settings.worker_memory_mb * 2**20, self.static)
        self.checks: deque[SpotCheck] = deque()  # answered rows waiting for a background re-solve
        self.replies = Replies(source, settings, engine.device.type)
        self.stop = threading.Event()
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
        """One turn: beat, fetch and admit, then steps of the lanes fair shares give, answering what finished."""
        self.source.beat()
        idle = not self.busy() and not self.scheduler.waiting
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
            while not self.stop.is_set():  # at least one step a turn
                key = self.fair.pick(self.busy())
                if key is None or self.step(key):  # something finished: its room may go to a waiting job
                    break
                if (room and self.source.ready(1)) or time.monotonic() >= ends:
                    break
        if time.monotonic() >= self.next_expiry_check:
            self.next_expiry_check = time.monotonic() + self.settings.expiry_check_ms / 1000
            self.expire()

    def busy(self) -> list[Hashable]:
        """Lanes with work to do."""
        return [k for k, g in self.lanes.items() if g.rows] + [k for k, lane in self.sliced.items() if lane]

    def step(self, key: Hashable) -> bool:
        """One step of a lane, charged to it; True if work finished (rows or memory were freed)."""
        start = time.perf_counter()
        if key in self.lanes:
            group = self.lanes[key]
            self.occupancy(key[0]).observe(group.rows / self.settings.max_batch_rows)  # type: ignore[index]
            self.safely(group)
            finished = self.finish(group)
        else:
            finished = self.sliced[key].serve(self.settings.slice_ms / 1000, self.replies, self.follow)
        self.fair.charge(key, time.perf_counter() - start)
        return finished

    def occupancy(self, model: str) -> Any:
        """The occupancy histogram of one model (label lookups cost more than the observation)."""
        child = self.occupancy_of.get(model)
        if child is None:
            child = self.occupancy_of[model] = metrics.OCCUPANCY.labels(model)
        return child

    def active_rows(self) -> int:
        return sum(group.rows for group in self.lanes.values())

    def active_memory(self) -> int:
        return sum(s.memory for lane in self.sliced.values() for s in lane.jobs)

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
            cost = self.engine.check(job.kind, request, self.settings.limits)
            work = self.engine.start(job.kind, request, cost)
        except Exception as error:
            self.replies.fail(job, error)
            return
        self.scheduler.add(self.waiting(job, work))

    def follow(self, job: Job, work: Work) -> None:
        """A job whose work continues as other work (a fast path's certificate rows, verify): it waits again,
        first in line (it was admitted once already)."""
        self.scheduler.add(self.waiting(job, work), first=True)

    @staticmethod
    def waiting(job: Job, work: Work) -> Waiting:
        rows = work.rows if isinstance(work, RowWork) else 0
        memory = work.memory if isinstance(work, SliceWork) else 0
        return Waiting(job, work, rows, memory, tuple(s.lane for s in work.row_sets))

    def admit(self) -> None:
        def sealed(key: Hashable) -> bool:
            return key in self.lanes and self.lanes[key].sealed

        gone = self.source.cancelled({w.job.id for w in self.scheduler.waiting})
        admission = self.scheduler.admit(self.active_rows(), self.active_memory(), sealed, lambda j: j.id in gone)
        for waiting, status in admission.dropped:
            self.replies.dropped(waiting.job, status, "before the job started")
        for waiting in admission.start:
            metrics.QUEUE_WAIT.labels(waiting.job.kind).observe(max(time.time() - waiting.job.submitted, 0.0))
            if isinstance(waiting.work, SliceWork):
                key = ("slices", waiting.job.kind, waiting.job.payload.get("model"))
                self.sliced.setdefault(key, SliceLane()).jobs.append(Sliced(waiting.job, waiting.work, waiting.memory))
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
        checks, then = self.replies.answer_rows(active, solved)
        if then is not None:
            self.follow(active.job, then)
            return
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
        """Jobs whose deadline passed (504) or whose caller went away (499) stop here: their rows leave the batch,
        their slices stop and release their memory. Nobody waits for them."""
        active = self.in_lanes()
        sliced = [s for lane in self.sliced.values() for s in lane.jobs]
        gone = self.source.cancelled({a.job.id for a in active} | {s.job.id for s in sliced})
        late = {j.id: j for j in [a.job for a in active] + [s.job for s in sliced] if j.expired or j.id in gone}
        if not late:
            return
        self.drop([a for a in active if a.job.id in late])
        for lane in self.sliced.values():
            lane.drop(set(late))
        for job in late.values():
            self.replies.dropped(job, LATE if job.expired else GONE, "while it was being computed")

    # -- shutdown -------------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Finish work in flight within the drain timeout; hand back whatever is left (and all waiting jobs)."""
        for waiting in self.scheduler.take_all():
            self.source.release(waiting.job)
        self.checks.clear()
        for group in self.lanes.values():
            group.drop(group.owners_of_kind(SpotCheck))
        deadline = time.monotonic() + self.settings.drain_timeout_s
        with torch.inference_mode():
            while (key := self.fair.pick(self.busy())) is not None and time.monotonic() < deadline:
                self.source.beat()
                self.step(key)
        left = self.in_lanes()
        self.drop(list(left))
        for lane in self.sliced.values():
            for sliced in lane.drop({s.job.id for s in lane.jobs}):
                self.source.release(sliced.job)
        for active in left:
            self.source.release(active.job)
        log.info("worker stopped", extra={"worker": self.name})
