"""POST /sample: exact samples from an autoregressive model, solved in parallel and batched across requests."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.deps import CALL_HEADERS, CallDep
from app.dispatch import field_error, run_job
from app.responses import FastJSONResponse
from app.schemas import SampleRequest
from models.registry import UnknownModelError
from samplers.noise import random_seed

router = APIRouter(tags=["sampling"])


@router.post("/sample", openapi_extra=CALL_HEADERS)
async def sample(body: SampleRequest, call: CallDep) -> FastJSONResponse:
    engine, settings = call.engine, call.settings
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
    return await run_job("sample", payload, call)
