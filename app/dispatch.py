"""From a validated request to its one answer: check it against its model, enqueue a job, wait until its deadline.

The family's checks run here, on the event-loop thread (NumPy only, no torch: see ``samplers.inputs``), so a
request that cannot be answered never reaches a queue. The job carries the request body (seed fixed), so any
worker, or a second one after a crash, computes the same answer. A caller that hangs up before the answer has
its job cancelled (the worker drops it at its next slice or iteration; 499 in the logs and metrics).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException, Request, Response
from pydantic import BaseModel

from app.deps import Call
from app.errors import GONE, answer_for
from app.jobs import Job
from app.queues import QueueFullError, QueueUnavailableError
from app.responses import FastJSONResponse


async def submit(task: str, request: BaseModel, call: Call) -> Response:
    model = str(getattr(request, "model", ""))
    http, queue, timeout = call.request, call.queue, call.timeout
    http.scope.setdefault("state", {})["model"] = model
    try:
        if getattr(request, "inputs", None) is not None or getattr(request, "targets", None) is not None:
            await asyncio.to_thread(call.engine.check, task, request, call.settings.limits)  # NumPy over the inputs
        else:
            call.engine.check(task, request, call.settings.limits)
    except Exception as error:
        status, detail = answer_for(error, {"model": model, "task": task})
        raise HTTPException(status, detail) from None
    job = Job(task, request.model_dump(), deadline=time.time() + timeout,
              request_id=http.scope["state"].get("request_id", ""))  # fmt: skip
    try:
        await queue.submit(job)
    except (QueueFullError, QueueUnavailableError) as error:
        detail = "queue full, retry later" if isinstance(error, QueueFullError) else str(error)
        raise HTTPException(503, detail, headers={"Retry-After": str(call.settings.retry_after_s)}) from None
    waiting = asyncio.ensure_future(queue.result(job, timeout))
    gone = asyncio.ensure_future(caller_gone(http))
    await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not waiting.done():  # the caller hung up: the worker stops the job at its next slice
        waiting.cancel()
        await queue.cancel(job)
        return Response(status_code=GONE)  # nobody reads it; the access log and metrics do
    result = waiting.result()
    if result is None:
        raise HTTPException(504, f"deadline of {timeout:g} s passed before the answer was ready")
    return FastJSONResponse(result.body, status_code=result.status)


async def caller_gone(request: Request) -> None:
    """Returns when the client closes its connection (the body was read already: only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
