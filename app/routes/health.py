"""GET /healthz (alive), GET /readyz (models known, queue reachable, a worker alive), GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.deps import EngineDep, QueueDep
from app.responses import FastJSONResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(engine: EngineDep, queue: QueueDep) -> FastJSONResponse:
    reachable = await queue.ping()
    workers = await queue.workers() if reachable else 0
    metrics.WORKERS.set(workers)
    checks = {"models": len(engine.entries) > 0, "queue": reachable, "workers": workers > 0}
    body = {"ready": all(checks.values()), "checks": checks, "workers": workers}
    return FastJSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics")
async def prometheus(queue: QueueDep) -> Response:
    try:
        metrics.QUEUE_DEPTH.set(await queue.depth())
        metrics.WORKERS.set(await queue.workers())
    except Exception:  # the metrics page must answer even when Redis does not
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
