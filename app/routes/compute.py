"""POST /gradient and POST /infer: RNN gradients and DenseNet / RNN inference through the solvers."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from app.deps import AuthDep, EngineDep, QueueDep, SettingsDep, TimeoutDep
from app.dispatch import field_error, run_job
from app.inputs import InputError, check_payload
from app.schemas import GradientRequest, InferRequest
from models.registry import UnknownModelError

router = APIRouter(tags=["gradients and inference"], dependencies=[AuthDep])


async def _dispatch(
    kind: str, payload: dict[str, object], request: Request, engine: EngineDep, queue: QueueDep,
    settings: SettingsDep, timeout: float,
) -> JSONResponse:  # fmt: skip
    try:
        info = engine.info(str(payload["model"]))
    except UnknownModelError as error:
        raise HTTPException(404, error.args[0]) from None
    try:
        check_payload(kind, payload, info, settings.max_batch_inputs)
    except InputError as error:
        raise field_error(error.field, error.message) from None
    return await run_job(kind, payload, request, queue, settings, timeout)


@router.post("/gradient")
async def gradient(
    body: GradientRequest, request: Request, engine: EngineDep, queue: QueueDep, settings: SettingsDep,
    timeout: TimeoutDep,
) -> JSONResponse:  # fmt: skip
    """Gradient of the mean next-pixel loss by BPTT ("sequential"), Jacobi (truncated when capped) or scan."""
    return await _dispatch("gradient", body.model_dump(), request, engine, queue, settings, timeout)


@router.post("/infer")
async def infer(
    body: InferRequest, request: Request, engine: EngineDep, queue: QueueDep, settings: SettingsDep,
    timeout: TimeoutDep,
) -> JSONResponse:  # fmt: skip
    """Forward a classifier (logits, classes) or a sequence model (next-pixel predictions) through the solvers."""
    return await _dispatch("infer", body.model_dump(), request, engine, queue, settings, timeout)
