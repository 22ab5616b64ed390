"""POST /sample, /infer and /gradient: a request, checked by its model's family, answered by a worker.

The bodies are ``samplers.requests``' models (methods are checked against the registry of families, so a new
family or method needs nothing here); OpenAPI documents the response bodies and the error shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from app.deps import CALL_HEADERS, CallDep
from app.dispatch import submit
from samplers.requests import (
    ErrorResponse,
    GradientRequest,
    GradientResponse,
    InferRequest,
    InferResponse,
    SampleRequest,
    SampleResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        401: "missing or wrong API key (when the server has keys)",
        404: "unknown model",
        413: "body larger than the server's limit",
        422: "a field at fault, named in `detail[].loc`",
        503: "queue full (see Retry-After) or no test set to draw inputs from",
        504: "the request's deadline passed (X-Request-Timeout)",
    }.items()
}
OFF_LOOP_BYTES = 64 * 1024  # bodies larger than this are parsed on a thread: /healthz never waits for a big upload


class OffLoopJSON(APIRoute):
    """A route whose large JSON bodies are parsed on a worker thread (FastAPI reuses the parsed body)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            body = await request.body()
            if len(body) > OFF_LOOP_BYTES:
                with contextlib.suppress(ValueError):  # malformed: FastAPI parses it again and answers 422
                    request._json = await asyncio.to_thread(json.loads, body)
            return await handler(request)

        return route


router = APIRouter(responses=ERRORS, route_class=OffLoopJSON)


@router.post("/sample", response_model=SampleResponse, tags=["sampling"], openapi_extra=CALL_HEADERS)
async def sample(body: SampleRequest, call: CallDep) -> Response:
    """Exact samples from an autoregressive model, solved in parallel and batched across requests."""
    return await submit("sample", body, call)


@router.post("/infer", response_model=InferResponse, tags=["gradients and inference"], openapi_extra=CALL_HEADERS)
async def infer(body: InferRequest, call: CallDep) -> Response:
    """Forward a classifier (logits, classes) or a sequence model (next-pixel predictions) through the solvers."""
    return await submit("infer", body, call)


@router.post("/gradient", response_model=GradientResponse, tags=["gradients and inference"], openapi_extra=CALL_HEADERS)
async def gradient(body: GradientRequest, call: CallDep) -> Response:
    """Gradient of the mean next-pixel loss by BPTT ("sequential"), Jacobi (truncated when capped) or scan."""
    return await submit("gradient", body, call)
