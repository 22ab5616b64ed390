"""POST /sample, /infer and /gradient: a request, checked by its model's family, answered by a worker.

The bodies are ``samplers.requests``' models (methods are checked against the registry of families, so a new
family or method needs nothing here); OpenAPI documents the request and response bodies and the error shapes.
A small body is parsed and validated in one pass by pydantic. A large one is parsed on a worker thread, and an
array longer than its field allows is refused before any of it is validated: validating 1.7 million numbers to
find that there are too many of them took 240 ms, all of it holding the interpreter (and every other request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

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
        408: "the request did not arrive in time (headers, or the body within its deadline)",
        413: "body larger than the server's limit",
        422: "a field at fault, named in `detail[].loc`",
        431: "request headers over the server's limits",
        503: "queue full or unavailable (see Retry-After), or no test set to draw inputs from",
        504: "the request's deadline passed (X-Request-Timeout)",
    }.items()
}
OFF_LOOP_BYTES = 64 * 1024  # larger bodies are parsed on a thread, their arrays' lengths checked before validation
M = TypeVar("M", bound=BaseModel)


def body_of(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency: the request body as ``model`` (422 naming the fields at fault, as FastAPI's own)."""

    def parse(raw: bytes) -> M:
        try:
            if len(raw) <= OFF_LOOP_BYTES:
                return model.model_validate_json(raw)  # parse and validate in one pass
            data = json.loads(raw)
            too_long(model, data)  # an oversized array is refused before a single number of it is validated
            return model.model_validate(data)
        except ValueError as error:  # ValidationError, or JSON that is not JSON
            errors: list[Any] = error.errors() if isinstance(error, ValidationError) else [
                {"type": "json_invalid", "loc": (), "msg": f"Invalid JSON: {error}", "input": None}]  # fmt: skip
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None

    async def read(request: Request) -> M:
        raw = await request.body()
        return await asyncio.to_thread(parse, raw) if len(raw) > OFF_LOOP_BYTES else parse(raw)

    return read


def too_long(model: type[BaseModel], data: object) -> None:
    """Raise a validation error for a top-level array longer than its field allows (without validating it)."""
    if not isinstance(data, dict):
        return
    for name, field in model.model_fields.items():
        limit = next((m.max_length for m in field.metadata if getattr(m, "max_length", None) is not None), None)
        value = data.get(name)
        if limit is not None and isinstance(value, list) and len(value) > limit:
            raise ValidationError.from_exception_data(model.__name__, [
                {"type": "too_long", "loc": (name,), "input": "[...]",
                 "ctx": {"field_type": "List", "max_length": limit, "actual_length": len(value)}}])  # fmt: skip


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI of a route whose body comes from ``body_of``: the body schema and the headers it reads."""
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }
    return {**CALL_HEADERS, "requestBody": body}


REQUEST_MODELS = (SampleRequest, InferRequest, GradientRequest)  # app.main adds their schemas to the components
router = APIRouter(responses=ERRORS)


@router.post("/sample", response_model=SampleResponse, tags=["sampling"], openapi_extra=documented(SampleRequest))
async def sample(body: Annotated[SampleRequest, Depends(body_of(SampleRequest))], call: CallDep) -> Response:
    """Exact samples from an autoregressive model, solved in parallel and batched across requests."""
    return await submit("sample", body, call)


@router.post("/infer", response_model=InferResponse, tags=["gradients and inference"],
             openapi_extra=documented(InferRequest))  # fmt: skip
async def infer(body: Annotated[InferRequest, Depends(body_of(InferRequest))], call: CallDep) -> Response:
    """Forward a classifier (logits, classes) or a sequence model (next-pixel predictions) through the solvers."""
    return await submit("infer", body, call)


@router.post("/gradient", response_model=GradientResponse, tags=["gradients and inference"],
             openapi_extra=documented(GradientRequest))  # fmt: skip
async def gradient(body: Annotated[GradientRequest, Depends(body_of(GradientRequest))], call: CallDep) -> Response:
    """Gradient of the mean next-pixel loss by BPTT ("sequential"), Jacobi (truncated when capped) or scan."""
    return await submit("gradient", body, call)
