"""From a validated request to its one answer: enqueue a job, wait until its deadline, return the result."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException

from app.deps import Call
from app.jobs import Job
from app.queues import QueueFullError
from app.responses import FastJSONResponse


def field_error(field: str, message: str, status: int = 422) -> HTTPException:
    """The error shape FastAPI uses for validation, naming the field at fault."""
    return HTTPException(status, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


async def run_job(kind: str, payload: dict[str, Any], call: Call) -> FastJSONResponse:
    request, queue, timeout = call.request, call.queue, call.timeout
    request.scope.setdefault("state", {})["model"] = payload["model"]
    job = Job(kind, payload, deadline=time.time() + timeout, request_id=request.scope["state"].get("request_id", ""))
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
