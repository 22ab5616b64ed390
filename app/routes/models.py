"""GET /models: what is served, and what each model can do (its family's description)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import EngineDep
from samplers.family import ModelInfo

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(engine: EngineDep) -> list[ModelInfo]:
    return engine.models()
