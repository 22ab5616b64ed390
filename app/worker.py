"""The worker loop: iteration-level (continuous) batching of sampling rows across requests.

Per model (and step variant) the worker keeps one ``RowGroup``: a ``solvers.FixedPointBatch`` whose rows are the
samples of many requests, each with its own fixed noise, schedule and cache slot. Every turn of the loop:
1. admit waiting jobs into free rows (never more rows than ``max_batch_rows``; a source hands out at most as many
   jobs as there are free rows);
2. advance every group by one solver iteration: ``evaluate`` on the pending rows, ``batch.advance`` (the same
   code as ``solvers.solve``, so a row's answer and iteration count are those of the library call);
3. take converged rows out; a request is answered the moment its last row is done.
Nobody waits for somebody else's slow sample. Gradient and inference jobs are short and run whole, between
iterations. ``batching="static"`` is the batch-synchronous baseline: a group admits only when empty and answers
only when every row is done.

Invariant: sample i of a request depends only on (model, seed, i): rows are independent in the batch and the
model steps are batch invariant (``models.invariance``, ``models.pixelcnnpp_bands``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from app import metrics
from app.inputs import InputError, model_inputs
from app.jobs import Job, Result
from app.settings import Settings
from samplers.engine import Engine
from samplers.sampling import PreparedSample, prepare, resolve_method, sample_body
from samplers.system import SamplingSystem, solve_system
from solvers import FixedPointBatch, Schedule

log = logging.getLogger("parafeed.worker")


class WorkSource(Protocol):
    """Where a worker gets jobs and puts results (in-process queue or Redis Streams)."""

    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]: ...

    def complete(self, job: Job, result: Result) -> None: ...

    def release(self, job: Job) -> None:
        """Give a job back unanswered (shutdown): another worker will run it."""
        ...

    def beat(self) -> None: ...


@dataclass
class ActiveSample:
    """A sampling job whose rows are in a group."""

    job: Job
    prepared: PreparedSample
    started: float  # perf_counter at admission
    admitted: float = field(default_factory=time.time)
    rows: dict[int, tuple[torch.Tensor, int, bool]] = field(default_factory=dict)  # index -> (x, iterations, ok)

    @property
    def size(self) -> int:
        return int(self.prepared.noise.shape[0])


class RowGroup:
    """Active rows of one model and step variant. Row r belongs to owners[r] = (job, sample index)."""

    def __init__(self, system: SamplingSystem, evaluate: Callable[..., torch.Tensor], capacity: int) -> None:
        self.system, self.evaluate, self.capacity = system, evaluate, capacity
        self.batch = FixedPointBatch(system.unknowns, system.unknown_shape, system.dtype, system.device)
        self.noise: torch.Tensor | None = None
        self.slots = torch.empty(0, dtype=torch.long)
        self.owners: list[tuple[ActiveSample, int]] = []
        self.cache = system.new_cache(capacity)
        self.free = list(range(capacity))
        self.sealed = False  # static batching: no admission once iterating, until the group empties

    @property
    def rows(self) -> int:
        return len(self.owners)

    def add(self, active: ActiveSample, solver_method: str) -> None:
        p = active.prepared
        n = active.size
        schedule = Schedule(method=solver_method, block_size=p.block_size or self.system.block_size,
                            max_iterations=p.max_iterations)  # fmt: skip
        # Everything that can fail first; then the state changes that must stay aligned, together.
        x0 = self.system.initial_guess(p.noise)
        noise = p.noise if self.noise is None else torch.cat([self.noise, p.noise])
        slots = torch.tensor(self.free[-n:], dtype=torch.long)
        self.system.reset(self.cache, slots.to(p.noise.device))
        self.batch.add(x0, schedule)
        del self.free[-n:]
        self.noise = noise
        self.slots = torch.cat([self.slots, slots])
        self.owners += [(active, i) for i in range(n)]

    def iterate(self) -> None:
        assert self.noise is not None
        rows = self.batch.pending()
        span = torch.stack(self.batch.span(rows), dim=1)
        slots = self.slots.to(rows.device)[rows]
        y = self.evaluate(self.batch.x[rows], self.noise[rows], self.cache, slots, span)
        self.batch.advance(rows, y)
        self.sealed = True

    def remove(self, keep: torch.Tensor) -> None:
        kept = set(keep.tolist())
        for r in range(self.rows):
            if r not in kept:
                self.free.append(int(self.slots[r]))
        self.batch.keep(keep)
        assert self.noise is not None
        self.noise = self.noise[keep.to(self.noise.device)]
        self.slots = self.slots[keep.cpu()]
        self.owners = [self.owners[r] for r in keep.tolist()]
        if not self.owners:
            self.sealed = False

    def harvest(self) -> list[ActiveSample]:
        """Take finished rows out; return the jobs this completed (all their rows done)."""
        done = torch.nonzero(self.batch.done).flatten().tolist()
        if not done:
            return []
        finished = []
        for r in done:
            active, index = self.owners[r]
            active.rows[index] = (self.batch.x[r].clone(), int(self.batch.iterations[r]), bool(self.batch.converged[r]))
            if len(active.rows) == active.size:
                finished.append(active)
        self.remove(torch.nonzero(~self.batch.done).flatten())
        return finished

    def drop(self, job_ids: set[str]) -> None:
        keep = [r for r, (active, _) in enumerate(self.owners) if active.job.id not in job_ids]
        self.remove(torch.tensor(keep, dtype=torch.long))


class Worker:
    def __init__(self, engine: Engine, source: WorkSource, settings: Settings, name: str = "worker") -> None:
        self.engine, self.source, self.settings, self.name = engine, source, settings, name
        self.groups: dict[tuple[str, str], RowGroup] = {}
        self.waiting: deque[Job] = deque()  # fetched, not yet admitted (not enough free rows)
        self.checks: deque[tuple[PreparedSample, torch.Tensor, str]] = deque()
        self.stop = threading.Event()
        self.static = settings.batching == "static"

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
        """One turn: beat, fetch and admit, one iteration of every group, answer what finished."""
        self.source.beat()
        idle = not self.active_rows() and not self.waiting
        fetched = self.fetch(0.25 if idle else 0.0)
        if fetched and idle and self.settings.max_wait_ms > 0:  # give a batch a moment to form
            time.sleep(self.settings.max_wait_ms / 1000)
            self.fetch(0.0)
        self.admit()
        with torch.inference_mode():
            for key, group in list(self.groups.items()):
                if group.rows:
                    metrics.OCCUPANCY.labels(key[0]).observe(group.rows / self.settings.max_batch_rows)
                    self.safely(group, group.iterate)
                    self.finish(group)
        self.expire()
        if not self.active_rows() and not self.waiting and self.checks:
            self.background_check()

    def active_rows(self) -> int:
        return sum(group.rows for group in self.groups.values())

    def free_rows(self) -> int:
        return self.settings.max_batch_rows - self.active_rows() - sum(self.rows_of(j) for j in self.waiting)

    def fetch(self, timeout: float) -> int:
        """Take jobs one at a time while rows are free (a job's size is known only once read). Returns count."""
        count = 0
        while self.free_rows() > 0 and count < self.settings.max_batch_rows:
            jobs = self.source.fetch(1, timeout if count == 0 else 0.0)
            if not jobs:
                break
            self.waiting.extend(jobs)
            count += len(jobs)
        if count == 0 and timeout > 0 and self.free_rows() <= 0:
            time.sleep(min(timeout, 0.01))
        return count

    @staticmethod
    def rows_of(job: Job) -> int:
        return int(job.payload.get("num_samples", 1)) if job.kind == "sample" else 0

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
                self.answer(job, Result.error(job.id, 422, f"num_samples: at most {self.settings.max_batch_rows}"))
            elif waiting_for_rows or self.active_rows() + self.rows_of(job) > self.settings.max_batch_rows:
                waiting_for_rows = True
                kept.append(job)
            else:
                try:
                    if not self.admit_sample(job):
                        kept.append(job)
                except Exception as error:
                    self.fail(job, error)
        self.waiting = kept

    def group_key(self, job: Job) -> tuple[str, str]:
        p = job.payload
        method, _ = resolve_method(self.engine, p["model"], p["method"])
        return p["model"], "evaluate_split" if method == "jacobi_split" else "evaluate"

    def admit_sample(self, job: Job) -> bool:
        """Put a sampling job's rows into its group; False if static batching keeps the group sealed."""
        key = self.group_key(job)
        group = self.groups.get(key)
        if group is not None and self.static and group.sealed:
            return False
        p = job.payload
        prepared = prepare(self.engine, p["model"], p["num_samples"], p["method"], p["seed"], p.get("block_size"),
                           p.get("max_iterations"), p.get("verify", False), p.get("format", "array"))  # fmt: skip
        solver_method, evaluate = prepared.system.plan(prepared.method)
        if group is None:
            group = self.groups[key] = RowGroup(prepared.system, evaluate, self.settings.max_batch_rows)
        metrics.QUEUE_WAIT.labels(job.kind).observe(max(time.time() - job.submitted, 0.0))
        group.add(ActiveSample(job, prepared, time.perf_counter()), solver_method)
        return True

    # -- answers --------------------------------------------------------------------------------------------
    def finish(self, group: RowGroup) -> None:
        if self.static and not bool(group.batch.done.all()):
            return  # batch-synchronous: everybody waits for the slowest row
        for active in group.harvest():
            self.safely_job(active.job, lambda a=active: self.reply(a))  # type: ignore[misc]

    def reply(self, active: ActiveSample) -> None:
        p = active.prepared
        ordered = [active.rows[i] for i in range(active.size)]
        samples = p.system.decode(torch.stack([x for x, _, _ in ordered]))
        iterations = [it for _, it, _ in ordered]
        compute = (time.perf_counter() - active.started) * 1000
        queue = max(active.admitted - active.job.submitted, 0.0) * 1000
        body = sample_body(p, samples, iterations, all(ok for *_, ok in ordered), compute, queue,
                           self.engine.device.type)  # fmt: skip
        for it in iterations:
            metrics.ITERATIONS.labels(p.model, p.method).observe(it)
        self.answer(active.job, Result(active.job.id, 200, body))
        if body["converged"] and self.settings.verify_fraction > 0 and random.random() < self.settings.verify_fraction:
            if len(self.checks) < self.settings.verify_queue:
                self.checks.append((p, samples, active.job.id))
            else:
                metrics.VERIFICATIONS.labels(p.model, "dropped").inc()

    def run_whole(self, job: Job) -> None:
        metrics.QUEUE_WAIT.labels(job.kind).observe(max(time.time() - job.submitted, 0.0))
        self.safely_job(job, lambda: self.answer(job, Result(job.id, 200, self.compute(job))))

    def compute(self, job: Job) -> dict[str, Any]:
        p = job.payload
        info = self.engine.info(p["model"])
        inputs = model_inputs(p, info, self.settings.max_batch_inputs)
        if inputs is None:
            inputs = self.engine.test_inputs(p["model"], p.get("batch", 4), p.get("seed", 0))
        inputs = inputs.to(self.engine.device)
        if job.kind == "gradient":
            targets = p.get("targets")
            target = None if targets is None else torch.tensor(targets, dtype=torch.float32, device=self.engine.device)
            return self.engine.gradient(p["model"], inputs, p["method"], p["wrt"], p.get("max_iterations"),
                                        p.get("verify", False), target)  # fmt: skip
        return self.engine.infer(p["model"], inputs, p["method"], p.get("tol", 0.0), p.get("max_iterations"),
                                 p.get("verify", False))  # fmt: skip

    def answer(self, job: Job, result: Result) -> None:
        metrics.JOBS.labels(job.kind, str(result.status)).inc()
        self.source.complete(job, result)

    def safely(self, group: RowGroup, action: Callable[[], None]) -> None:
        """A failure inside a shared iteration fails the group's jobs, never the worker."""
        try:
            action()
        except Exception:
            log.exception("iteration failed; failing the jobs of this group")
            for active in {id(a): a for a, _ in group.owners}.values():
                self.answer(active.job, Result.error(active.job.id, 500, "internal error while solving"))
            group.remove(torch.empty(0, dtype=torch.long))

    def safely_job(self, job: Job, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:
            self.fail(job, error)

    def fail(self, job: Job, error: Exception) -> None:
        """Bad input is the caller's 422; anything else is our 500, logged with the traceback."""
        if isinstance(error, InputError):
            self.answer(job, Result.error(job.id, 422, str(error)))
        elif isinstance(error, ValueError | KeyError):
            self.answer(job, Result.error(job.id, 422, str(error.args[0] if error.args else error)))
        else:
            log.error("job failed", exc_info=error, extra={"job": job.id})
            self.answer(job, Result.error(job.id, 500, "internal error"))

    def expire(self) -> None:
        """Rows of requests whose deadline passed are dropped: nobody waits for them."""
        for group in self.groups.values():
            late = {a.job.id for a, _ in group.owners if a.job.expired}
            if late:
                jobs = {a.job.id: a.job for a, _ in group.owners if a.job.id in late}
                group.drop(late)
                for job in jobs.values():
                    self.answer(job, Result.error(job.id, 504, "deadline passed while solving"))

    def background_check(self) -> None:
        """Continuous verification: re-solve one answered request sequentially and compare bit for bit."""
        prepared, samples, job_id = self.checks.popleft()
        with torch.inference_mode():
            reference = solve_system(prepared.system, prepared.noise, "sequential").samples
        if torch.equal(reference.cpu(), samples.cpu()):
            metrics.VERIFICATIONS.labels(prepared.model, "equal").inc()
        else:
            metrics.VERIFICATIONS.labels(prepared.model, "mismatch").inc()
            log.error("verification mismatch: reproduce with the same model, seed and method",
                      extra={"job": job_id, "model": prepared.model, "seed": prepared.seed,
                             "method": prepared.method, "num_samples": int(samples.shape[0])})  # fmt: skip

    # -- shutdown -------------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Finish rows in flight within the drain timeout; hand back whatever is left (and all waiting jobs)."""
        for job in self.waiting:
            self.source.release(job)
        self.waiting.clear()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self.active_rows() and time.monotonic() < deadline:
            with torch.inference_mode():
                for group in self.groups.values():
                    if group.rows:
                        self.safely(group, group.iterate)
                        self.finish(group)
        for group in self.groups.values():
            for active in {id(a): a for a, _ in group.owners}.values():
                self.source.release(active.job)
            group.remove(torch.empty(0, dtype=torch.long))
        log.info("worker stopped", extra={"worker": self.name})
