"""How a worker answers: responses, errors (mapped in ``app.errors``), metrics, and continuous verification.

Every job is answered exactly once through ``answer`` (the source delivers it: an asyncio future in-process, a
Lua script in Redis). A response is the work's typed body (``samplers.requests``), sent as plain JSON.
"""

from __future__ import annotations

import logging
import random
import time

from pydantic import BaseModel

from app import metrics
from app.errors import LATE, answer_for
from app.jobs import Job, Result
from app.queues import WorkSource
from app.settings import Settings
from app.worker.owners import Active, SpotCheck
from samplers.work import Check, Context, RowWork, SliceWork, Solved, Work

log = logging.getLogger("parafeed.worker")


class Replies:
    def __init__(self, source: WorkSource, settings: Settings, device: str) -> None:
        self.source, self.settings, self.device = source, settings, device

    def answer(self, job: Job, result: Result) -> None:
        metrics.JOBS.labels(job.kind, str(result.status)).inc()
        self.source.complete(job, result)

    def ok(self, job: Job, response: BaseModel) -> None:
        self.answer(job, Result(job.id, 200, response))

    def error(self, job: Job, status: int, detail: object) -> None:
        self.answer(job, Result(job.id, status, {"detail": detail}))

    def dropped(self, job: Job, status: int, when: str) -> None:
        """A job stopped because its deadline passed (504) or its caller went away (499)."""
        reason = "deadline passed" if status == LATE else "the caller went away"
        self.error(job, status, f"{reason} {when}")

    def fail(self, job: Job, error: Exception) -> None:
        """A job that failed: the caller's mistake is a 4xx naming it, ours a logged 500 without details."""
        status, detail = answer_for(error, {"job": job.id})
        self.error(job, status, detail)

    def answer_rows(self, active: Active, solved: list[Solved]) -> tuple[list[Check], Work | None]:
        """Answer a job whose rows are all solved. Returns the checks continuous verification asks for, or the
        work that continues the job (certificate rows after a candidate): then nothing is answered yet."""
        job = active.job
        compute = (time.perf_counter() - active.started) * 1000
        queue = max(active.admitted - job.submitted - active.work.prior_ms / 1000, 0.0) * 1000
        try:
            response = active.work.respond(solved, Context(compute, queue, self.device))
        except Exception as error:
            self.fail(job, error)
            return [], None
        if isinstance(response, RowWork | SliceWork):
            return [], response
        model, method = str(job.payload.get("model")), str(getattr(response, "method", "-"))
        for iterations in solved[0].iterations:
            metrics.ITERATIONS.labels(model, method).observe(iterations)
        self.ok(job, response)
        fraction = self.settings.verify_fraction
        return (active.work.checks(solved) if fraction > 0 and random.random() < fraction else []), None

    def dropped_checks(self, job: Job, count: int) -> None:
        if count > 0:
            metrics.VERIFICATIONS.labels(str(job.payload.get("model")), "dropped").inc(count)

    def record_check(self, spot: SpotCheck) -> None:
        model = str(spot.check.label.get("model"))
        if spot.equal:
            metrics.VERIFICATIONS.labels(model, "equal").inc()
            return
        metrics.VERIFICATIONS.labels(model, "mismatch").inc()
        log.error("verification mismatch: reproduce with the same model, seed, method and sample index",
                  extra={"job": spot.job_id, **spot.check.label})  # fmt: skip
