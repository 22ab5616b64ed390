"""POST /sample: exact samples from an autoregressive model, solved in parallel and batched across requests."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from app.deps import AuthDep, EngineDep, QueueDep, SettingsDep, TimeoutDep
from app.dispatch import field_error, run_job
from app.schemas import SampleRequest
from models.registry import UnknownModelError
from samplers.noise import random_seed

router = APIRouter(tags=["sampling"], dependencies=[AuthDep])


@router.post("/sample")
async def sample(
    body: SampleRequest, request: Request, engine: EngineDep, queue: QueueDep, settings: SettingsDep,
    timeout: TimeoutDep,
) -> JSONResponse:  # fmt: skip
    try:
        info = engine.info(body.model)
    except UnknownModelError as error:
        raise HTTPException(404, error.args[0]) from None
    if info.kind != "sampler":
        raise field_error("model", f"{body.model} is a {info.kind}, not a sampler")
    if body.method not in info.methods:
        raise field_error("method", f"{body.model} offers {', '.join(info.methods)}")
    if body.num_samples > settings.max_samples:
        raise field_error("num_samples", f"at most {settings.max_samples} per request on this server")
    if body.verify and 2 * body.num_samples > settings.max_batch_rows:  # each sample brings a reference row
        raise field_error("num_samples", f"at most {settings.max_batch_rows // 2} with verify on this server")
    if body.block_size is not None and body.block_size > info.sequential_steps:
        raise field_error("block_size", f"at most {info.sequential_steps} (the number of unknowns)")
    payload = body.model_dump()
    payload["seed"] = random_seed() if body.seed is None else body.seed
    return await run_job("sample", payload, request, queue, settings, timeout)
