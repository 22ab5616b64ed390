"""GET /models: what is served, and what each model can do."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import AuthDep, EngineDep
from app.schemas import ModelOut

router = APIRouter(tags=["models"], dependencies=[AuthDep])


@router.get("/models", response_model=list[ModelOut])
def list_models(engine: EngineDep) -> list[dict[str, object]]:
    return [info.as_json() for info in engine.models()]
