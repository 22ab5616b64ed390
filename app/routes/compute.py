"""POST /gradient and POST /infer: RNN gradients and DenseNet / RNN inference through the solvers."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.deps import CALL_HEADERS, Call, CallDep
from app.dispatch import field_error, run_job
from app.inputs import InputError, check_payload
from app.responses import FastJSONResponse
from app.schemas import GradientRequest, InferRequest
from models.registry import UnknownModelError

router = APIRouter(tags=["gradients and inference"])


async def _dispatch(kind: str, payload: dict[str, object], call: Call) -> FastJSONResponse:
    try:
        info = call.engine.info(str(payload["model"]))
    except UnknownModelError as error:
        raise HTTPException(404, error.args[0]) from None
    try:
        check_payload(kind, payload, info, call.settings.max_batch_inputs)
    except InputError as error:
        raise field_error(error.field, error.message) from None
    return await run_job(kind, payload, call)


@router.post("/gradient", openapi_extra=CALL_HEADERS)
async def gradient(body: GradientRequest, call: CallDep) -> FastJSONResponse:
    """Gradient of the mean next-pixel loss by BPTT ("sequential"), Jacobi (truncated when capped) or scan."""
    return await _dispatch("gradient", body.model_dump(), call)


@router.post("/infer", openapi_extra=CALL_HEADERS)
async def infer(body: InferRequest, call: CallDep) -> FastJSONResponse:
    """Forward a classifier (logits, classes) or a sequence model (next-pixel predictions) through the solvers."""
    return await _dispatch("infer", body.model_dump(), call)
