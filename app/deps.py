"""FastAPI dependencies: the engine, the queue, the settings, API keys and the request deadline.

All are ``async def``: they only read request state, and a plain ``def`` would cost every request a hop through
the thread pool per dependency.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from app.queues import JobQueue
from app.settings import Settings
from samplers.engine import Engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """With keys configured, X-API-Key or Authorization: Bearer must carry one (compared in constant time)."""
    if not settings.api_keys:
        return
    given = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else "")
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


async def request_timeout(settings: SettingsDep, x_request_timeout: Annotated[str | None, Header()] = None) -> float:
    """Seconds this request may take: X-Request-Timeout in (0, max_request_timeout_s] (else 422 naming the
    header), or the default. Past it: 504."""
    if x_request_timeout is None:
        return settings.request_timeout_s
    try:
        value = float(x_request_timeout)
    except ValueError:
        raise HTTPException(422, [{"loc": ["header", "x-request-timeout"], "msg": "must be seconds as a number",
                                   "type": "value_error"}]) from None  # fmt: skip
    if not 0 < value <= settings.max_request_timeout_s:
        raise HTTPException(422, [{"loc": ["header", "x-request-timeout"], "type": "value_error",
                                   "msg": f"must be in (0, {settings.max_request_timeout_s}]"}])  # fmt: skip
    return value


AuthDep = Depends(require_api_key)
TimeoutDep = Annotated[float, Depends(request_timeout)]
