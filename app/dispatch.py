"""From a validated request to its one answer: check it against its model, enqueue a job, wait until its deadline.

The family's checks run here, on the event-loop thread (NumPy only, no torch: see ``samplers.inputs``), so a
request that cannot be answered never reaches a queue. The job carries the request body (seed fixed), so any
worker, or a second one after a crash, computes the same answer.
"""

from __future__ import annotations

import time

from fastapi import HTTPException
from pydantic import BaseModel

from app.deps import Call
from app.errors import answer_for
from app.jobs import Job
from app.queues import QueueFullError
from app.responses import FastJSONResponse


async def submit(task: str, request: BaseModel, call: Call) -> FastJSONResponse:
    model = str(getattr(request, "model", ""))
    http, queue, timeout = call.request, call.queue, call.timeout
    http.scope.setdefault("state", {})["model"] = model
    try:
        call.engine.check(task, request, call.settings.limits)
    except Exception as error:
        status, detail = answer_for(error, {"model": model, "task": task})
        raise HTTPException(status, detail) from None
    job = Job(task, request.model_dump(), deadline=time.time() + timeout,
              request_id=http.scope["state"].get("request_id", ""))  # fmt: skip
    try:
        await queue.submit(job)
    except QueueFullError:
        raise HTTPException(
            503, "queue full, retry later", headers={"Retry-After": str(call.settings.retry_after_s)}
        ) from None
    result = await queue.result(job, timeout)
    if result is None:
        raise HTTPException(504, f"deadline of {timeout:g} s passed before the answer was ready")
    return FastJSONResponse(result.body, status_code=result.status)
