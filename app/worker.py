"""The worker loop: iteration-level (continuous) batching across requests (DESIGN.md section 6).

Per model and step variant the worker keeps one ``app.rows.RowGroup``. Every turn of the loop:
1. beat, then fetch jobs while rows are free (a source hands out at most as many jobs as there are free rows,
   and no more than one whole gradient/infer job ahead, so a worker never hoards what others could run);
2. admit waiting jobs into free rows in arrival order (a job that does not fit keeps its place); spare rows,
   up to ``verify_rows``, take background checks (continuous verification);
3. advance every group by one solver iteration (the same ``FixedPointBatch`` code as ``solvers.solve``);
4. answer converged rows; a request is answered the moment its last row is done.
Steps 3-4 repeat within the turn while nobody could be admitted anyway (no row finished, no job ready for free
rows, at most ``TURN_S``), so the bookkeeping of steps 1-2 is paid once per several iterations.
Nobody waits for somebody else's slow sample. Gradient and inference jobs are short and run whole, one per turn,
between iterations. ``batching="static"`` is the batch-synchronous baseline: a group admits only when empty and
answers only when every row is done.

Invariant: sample i of a request depends only on (model, seed, i) (see ``app.rows``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import torch

from app import metrics
from app.inputs import InputError, model_inputs, model_targets
from app.jobs import Job, Result
from app.rows import ActiveSample, RowGroup, RowOwner, SampleCheck
from app.settings import Settings
from models.data import DataNotFoundError
from models.registry import UnknownModelError
from samplers.engine import Engine, WrongKindError
from samplers.sampling import PreparedSample, prepare, sample_body
from solvers import Schedule

log = logging.getLogger("parafeed.worker")
# Deadlines are seconds apart; looking for expired rows every iteration (about a millisecond) would be waste.
EXPIRY_CHECK_S = 0.01
# Longest run of iterations in one turn: deadlines, shutdown and heartbeats are looked at at least this often.
TURN_S = 0.01


class WorkSource(Protocol):
    """Where a worker gets jobs and puts results (in-process queue or Redis Streams)."""

    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]: ...

    def complete(self, job: Job, result: Result) -> None: ...

    def release(self, job: Job) -> None:
        """Give a job back unanswered (shutdown): another worker will run it."""
        ...

    def beat(self) -> None:
        """The loop is alive and making progress (called once per turn)."""
        ...

    def ready(self, wanted: int) -> bool:
        """Would ``fetch`` return a job at once? Asked between solver iterations, so cheap and without I/O;
        ``wanted``: how many jobs the worker has room for now (0: none, do not read ahead)."""
        ...


def field_error_result(job: Job, field: str, message: str) -> Result:
    """422 naming the body field at fault, in the shape the API's own validation errors have."""
    return Result(job.id, 422, {"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]})


def error_result(job: Job, error: Exception) -> Result:
    """A failed job's answer: the caller's mistake is a 4xx naming it, ours a logged 500 without details."""
    if isinstance(error, InputError):
        return field_error_result(job, error.field, error.message)
    if isinstance(error, UnknownModelError):
        return Result.error(job.id, 404, str(error.args[0]))
    if isinstance(error, WrongKindError):
        return field_error_result(job, "model", str(error))
    if isinstance(error, DataNotFoundError):  # inputs drawn from the test set need the dataset installed
        log.error("test-set inputs requested but no dataset is installed", extra={"job": job.id})
        return Result.error(job.id, 503, f"this server has no test set to draw inputs from; send inputs. {error}")
    log.error("job failed", exc_info=error, extra={"job": job.id})
    return Result.error(job.id, 500, "internal error")


class Worker:
    def __init__(self, engine: Engine, source: WorkSource, settings: Settings, name: str = "worker") -> None:
        self.engine, self.source, self.settings, self.name = engine, source, settings, name
        self.groups: dict[tuple[str, str], RowGroup] = {}
        self.waiting: deque[Job] = deque()  # fetched, not yet admitted (not enough free rows)
        self.checks: deque[SampleCheck] = deque()  # answered samples waiting for a background re-solve
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
        """One turn: beat, fetch and admit, then solver iterations of every group, answering what finished.

        Iterations repeat inside the turn while nobody could be admitted anyway: until a row finished (its rows
        are free), the source has a job ready for free rows, nothing is left to solve, or ``TURN_S`` passed. The
        bookkeeping of a turn then costs once per several iterations instead of once per iteration.
        """
        self.source.beat()
        idle = not self.active_rows() and not self.waiting
        fetched = self.fetch(0.25 if idle else 0.0)
        if fetched and idle and self.settings.batch_wait_s > 0:  # give a batch a moment to form
            time.sleep(self.settings.batch_wait_s)
            self.fetch(0.0)
        if self.waiting:
            self.admit()
        if self.checks:
            self.admit_checks()
        room = self.wants_jobs()
        self.source.ready(int(room))  # admission may have used the last free rows: no read-ahead
        ends = time.monotonic() + TURN_S
        with torch.inference_mode():
            # Rows leave the batch only when one finishes, which ends this loop: the room stays what it was.
            while self.iterate_all() and not self.stop.is_set() and time.monotonic() < ends:
                if room and self.source.ready(1):
                    break
        if time.monotonic() >= self.next_expiry_check:
            self.next_expiry_check = time.monotonic() + EXPIRY_CHECK_S
            self.expire()

    def iterate_all(self) -> bool:
        """One solver iteration of every group with rows; True if some were iterated and none finished."""
        stepped, finished = False, False
        for key, group in self.groups.items():
            if group.rows:
                self.occupancy(key[0]).observe(group.rows / self.settings.max_batch_rows)
                self.safely(group, group.iterate)
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
        return sum(group.rows for group in self.groups.values())

    def free_rows(self) -> int:
        return self.settings.max_batch_rows - self.active_rows() - sum(self.rows_of(j) for j in self.waiting)

    def fetch(self, timeout: float) -> int:
        """Take jobs one at a time while rows are free (a job's size is known only once read) and no whole job
        is already waiting. Returns how many were taken."""
        count = 0
        while self.wants_jobs():
            jobs = self.source.fetch(1, timeout if count == 0 else 0.0)
            if not jobs:
                break
            self.waiting.extend(jobs)
            count += len(jobs)
        if count == 0 and timeout > 0 and self.free_rows() <= 0:
            time.sleep(min(timeout, 0.01))
        return count

    def wants_jobs(self) -> bool:
        """Rows are free and no whole job is already waiting to run."""
        return self.free_rows() > 0 and not any(j.kind != "sample" for j in self.waiting)

    @staticmethod
    def rows_of(job: Job) -> int:
        """Batch rows a job occupies: its samples, twice when it asked to verify; whole jobs take none."""
        if job.kind != "sample":
            return 0
        return int(job.payload.get("num_samples", 1)) * (2 if job.payload.get("verify") else 1)

    # -- admission ------------------------------------------------------------------------------------------
    def admit(self) -> None:
        """Admit waiting jobs in order while rows are free. A sampling job waiting for rows keeps its place and
        nobody overtakes it; a job whose model's batch is sealed (static batching) waits without blocking others;
        at most one whole (gradient/infer) job runs per turn, so the batch's iterations keep going."""
        ran_whole, waiting_for_rows, kept = False, False, deque[Job]()
        while self.waiting:
            job = self.waiting.popleft()
            if job.expired:
                self.answer(job, Result.error(job.id, 504, "deadline passed before the job started"))
            elif job.kind != "sample":
                if ran_whole:
                    kept.append(job)
                else:
                    self.run_whole(job)
                    ran_whole = True
            elif self.rows_of(job) > self.settings.max_batch_rows:
                limit = self.settings.max_batch_rows // (2 if job.payload.get("verify") else 1)
                self.answer(job, field_error_result(job, "num_samples", f"at most {limit} on this worker"))
            elif waiting_for_rows or self.active_rows() + self.rows_of(job) > self.settings.max_batch_rows:
                waiting_for_rows = True
                kept.append(job)
            else:
                try:
                    if not self.admit_sample(job):
                        kept.append(job)
                except Exception as error:
                    self.answer(job, error_result(job, error))
        self.waiting = kept

    def group(self, prepared: PreparedSample, method: str) -> RowGroup | None:
        """The group that solves ``method`` rows of this model (created on first use); None if sealed."""
        variant = "evaluate_split" if method == "jacobi_split" else "evaluate"
        key = (prepared.model, variant)
        group = self.groups.get(key)
        if group is None:
            _, evaluate = prepared.system.plan(method)
            group = self.groups[key] = RowGroup(prepared.system, evaluate, self.settings.max_batch_rows)
        if self.static and group.sealed:
            return None
        return group

    def admit_sample(self, job: Job) -> bool:
        """Put a sampling job's rows (and its sequential reference rows, with verify) into their groups; False if
        static batching keeps a group sealed."""
        p = job.payload
        prepared = prepare(self.engine, p["model"], p["num_samples"], p["method"], p["seed"], p.get("block_size"),
                           p.get("max_iterations"), p.get("verify", False), p.get("format", "array"))  # fmt: skip
        solver_method, _ = prepared.system.plan(prepared.method)
        group = self.group(prepared, prepared.method)
        reference = self.group(prepared, "sequential") if prepared.verify else None
        if group is None or (prepared.verify and reference is None):
            return False
        metrics.QUEUE_WAIT.labels(job.kind).observe(max(time.time() - job.submitted, 0.0))
        active = ActiveSample(job, prepared)
        block = prepared.block_size or prepared.system.block_size
        group.add(prepared.noise, Schedule(solver_method, block, max_iterations=prepared.max_iterations), active)
        if reference is not None:
            try:
                reference.add(prepared.noise, Schedule("sequential"), active, first_index=active.size)
            except Exception:
                self.drop([active])  # never leave half a request in the batch
                raise
        return True

    def admit_checks(self) -> None:
        """Continuous verification: spare rows (never more than ``verify_rows``, never while a job waits for rows)
        re-solve answered samples by the sequential method."""
        while self.checks and not self.waiting and self.free_rows() > 0:
            held = sum(len(g.owners_of_kind(SampleCheck)) for g in self.groups.values())
            if held >= self.settings.verify_rows:
                return
            check = self.checks[0]
            group = self.group(check.prepared, "sequential")
            if group is None:
                return
            self.checks.popleft()
            group.add(check.prepared.noise[check.index : check.index + 1], Schedule("sequential"), check)

    # -- answers --------------------------------------------------------------------------------------------
    def finish(self, group: RowGroup) -> bool:
        """Answer the owners whose rows are all done; True if rows were freed."""
        if self.static and not bool(group.batch.done.all()):
            return False  # batch-synchronous: everybody waits for the slowest row
        before = group.rows
        for owner in group.harvest():
            if isinstance(owner, ActiveSample):
                self.safely_job(owner.job, lambda a=owner: self.reply(a))  # type: ignore[misc]
            elif isinstance(owner, SampleCheck):
                self.record_check(owner)
        return group.rows < before

    def reply(self, active: ActiveSample) -> None:
        p = active.prepared
        samples, iterations, converged = active.solved()
        compute = (time.perf_counter() - active.started) * 1000
        queue = max(active.admitted - active.job.submitted, 0.0) * 1000
        body = sample_body(p, samples, iterations, converged, compute, queue, self.engine.device.type,
                           active.verified_per_sample(samples))  # fmt: skip
        for it in iterations:
            metrics.ITERATIONS.labels(p.model, p.method).observe(it)
        self.answer(active.job, Result(active.job.id, 200, body))
        if converged and self.settings.verify_fraction > 0 and random.random() < self.settings.verify_fraction:
            for i in range(active.size):
                if len(self.checks) < self.settings.verify_queue:
                    self.checks.append(SampleCheck(p, i, samples[i], active.job.id))
                else:
                    metrics.VERIFICATIONS.labels(p.model, "dropped").inc()

    def record_check(self, check: SampleCheck) -> None:
        p = check.prepared
        if check.equal:
            metrics.VERIFICATIONS.labels(p.model, "equal").inc()
            return
        metrics.VERIFICATIONS.labels(p.model, "mismatch").inc()
        log.error("verification mismatch: reproduce with the same model, seed, method and sample index",
                  extra={"job": check.job_id, "model": p.model, "seed": p.seed, "method": p.method,
                         "sample": check.index})  # fmt: skip

    def run_whole(self, job: Job) -> None:
        started = time.time()
        metrics.QUEUE_WAIT.labels(job.kind).observe(max(started - job.submitted, 0.0))

        def run() -> None:
            body = self.compute(job)
            body["timings_ms"]["queue"] = round(max(started - job.submitted, 0.0) * 1000, 3)
            self.answer(job, Result(job.id, 200, body))

        self.safely_job(job, run)

    def compute(self, job: Job) -> dict[str, Any]:
        p = job.payload
        info = self.engine.info(p["model"])
        inputs = model_inputs(p, info, self.settings.max_batch_inputs)
        if inputs is None:
            inputs = self.engine.test_inputs(p["model"], p.get("batch", 4), p.get("seed", 0))
        inputs = inputs.to(self.engine.device)
        if job.kind == "gradient":
            target = model_targets(p, info, self.settings.max_batch_inputs)
            if target is not None:
                target = target.to(self.engine.device)
            return self.engine.gradient(p["model"], inputs, p["method"], p["wrt"], p.get("max_iterations"),
                                        p.get("verify", False), target)  # fmt: skip
        return self.engine.infer(p["model"], inputs, p["method"], p.get("tol", 0.0), p.get("max_iterations"),
                                 p.get("verify", False))  # fmt: skip

    def answer(self, job: Job, result: Result) -> None:
        metrics.JOBS.labels(job.kind, str(result.status)).inc()
        self.source.complete(job, result)

    def drop(self, owners: list[RowOwner]) -> None:
        """Remove these owners' rows from every group (a request's reference rows may sit in another)."""
        for group in self.groups.values():
            group.drop(owners)

    def safely(self, group: RowGroup, action: Callable[[], None]) -> None:
        """A failure inside a shared iteration fails the group's jobs, never the worker."""
        try:
            action()
        except Exception:
            log.exception("iteration failed; failing the jobs of this group")
            failed = group.owners_of_kind(ActiveSample)
            self.drop([*failed, *group.owners_of_kind(SampleCheck)])
            for active in failed:
                assert isinstance(active, ActiveSample)
                self.answer(active.job, Result.error(active.job.id, 500, "internal error while solving"))

    def safely_job(self, job: Job, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:
            self.answer(job, error_result(job, error))

    def expire(self) -> None:
        """Rows of requests whose deadline passed are dropped: nobody waits for them."""
        late: dict[str, ActiveSample] = {}
        for group in self.groups.values():
            for owner in group.owners_of_kind(ActiveSample):
                assert isinstance(owner, ActiveSample)
                if owner.job.expired:
                    late[owner.job.id] = owner
        if late:
            self.drop(list(late.values()))
            for active in late.values():
                self.answer(active.job, Result.error(active.job.id, 504, "deadline passed while solving"))

    # -- shutdown -------------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Finish rows in flight within the drain timeout; hand back whatever is left (and all waiting jobs)."""
        for job in self.waiting:
            self.source.release(job)
        self.waiting.clear()
        self.checks.clear()
        for group in self.groups.values():
            group.drop(group.owners_of_kind(SampleCheck))
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self.active_rows() and time.monotonic() < deadline:
            self.source.beat()
            with torch.inference_mode():
                for group in self.groups.values():
                    if group.rows:
                        self.safely(group, group.iterate)
                        self.finish(group)
        left: dict[str, ActiveSample] = {}
        for group in self.groups.values():
            for owner in group.owners_of_kind(ActiveSample):
                assert isinstance(owner, ActiveSample)
                left[owner.job.id] = owner
        self.drop(list(left.values()))
        for active in left.values():
            self.source.release(active.job)
        log.info("worker stopped", extra={"worker": self.name})
