"""The FastAPI application: ``create_app(settings)`` wires engine, queue, worker, middleware and routes.

Embedded (no Redis URL): one process; an in-process queue feeds a worker thread on the best local device.
Scaled (``redis_url``): this process only validates and enqueues; ``parafeed worker`` processes compute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi

from app.middleware import ServiceMiddleware
from app.queues import JobQueue
from app.queues.local import LocalQueue
from app.responses import FastJSONResponse
from app.routes import health, models, tasks
from app.settings import Settings, get_settings
from app.worker import Worker

log = logging.getLogger("parafeed.api")


def build_queue(settings: Settings) -> JobQueue:
    if settings.redis_url:
        from app.queues.redis_streams import RedisQueue

        return RedisQueue(settings)
    return LocalQueue(settings.max_queue)


async def start_embedded_worker(worker: Worker) -> threading.Thread:
    """Start the embedded worker thread; return once it has loaded every model (ready means ready).

    Every torch operation of the process runs on this one thread, model loading included. A second thread that
    ever runs a parallel torch op keeps a second OpenMP thread team alive; with more OpenMP threads than cores,
    libgomp stops spinning between parallel regions and every small solve pays futex wake-ups (measured on
    2 cores: a 4-sample MADE Jacobi request took 40-60 ms instead of 19 ms).
    """
    loaded = threading.Event()
    failure: list[BaseException] = []

    def load_then_serve() -> None:
        try:
            torch.set_num_threads(worker.settings.torch_threads)
            worker.engine.load_all()  # weights verified and in memory before the first request
        except BaseException as error:
            failure.append(error)
            return
        finally:
            loaded.set()
        worker.run()

    thread = threading.Thread(target=load_then_serve, name="parafeed-worker", daemon=True)
    thread.start()
    await asyncio.to_thread(loaded.wait)
    if failure:
        raise failure[0]
    return thread


def with_request_schemas(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with the request bodies the task routes read themselves (``app.routes.tasks``)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in tasks.REQUEST_MODELS:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = settings.engine()
        queue = build_queue(settings)
        await queue.start()
        app.state.settings, app.state.engine, app.state.queue = settings, engine, queue
        thread = None
        if isinstance(queue, LocalQueue):
            worker = Worker(engine, queue, settings, name="embedded")
            thread = await start_embedded_worker(worker)
            queue.worker_thread = thread
            app.state.worker = worker
        url = f"http://{settings.host}:{settings.port}"
        auth = f"on ({len(settings.api_keys)} keys)" if settings.api_keys else "off (PARAFEED_API_KEYS unset)"
        log.info(f"parafeed serving on {url} (docs: {url}/docs); authentication {auth}",
                 extra={"mode": "embedded" if thread else "redis", "device": str(engine.device),
                        "models": list(engine.entries), "authentication": bool(settings.api_keys),
                        "threads": settings.torch_threads})  # fmt: skip
        try:
            yield
        finally:
            if thread is not None:
                app.state.worker.stop.set()
                await asyncio.to_thread(thread.join, settings.drain_timeout_s + 5)
            await queue.stop()
            log.info("stopped")

    app = FastAPI(
        title="parafeed",
        version="1.0",
        description="Exact parallel evaluation of sequential neural computations: samples, gradients and "
        "inference solved as lower-triangular systems by parallel fixed-point iteration, equal to the sequential "
        "answer bit for bit (or saying so when not).",
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
    )
    app.add_middleware(ServiceMiddleware, settings=settings)
    for router in (models.router, tasks.router, health.router):
        app.include_router(router)
    app.openapi = lambda: with_request_schemas(app)  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> FastJSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in error.errors()]  # fmt: skip
        return FastJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> FastJSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return FastJSONResponse({"detail": "internal error"}, status_code=500)

    return app
