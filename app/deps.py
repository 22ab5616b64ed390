"""FastAPI dependencies: the engine, the queue, the settings, API keys and the request deadline.

Compute routes take one dependency, ``CallDep``: the API key checked, the deadline read, the service's parts
handed over. FastAPI resolves each dependency and declared header for every request (30-50 us apiece here), so
the hot routes pay for one instead of seven plus three headers. All are ``async def``: they only read request
state, and a plain ``def`` would cost a hop through the thread pool.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request

from app.queues import JobQueue
from app.settings import Settings
from samplers.engine import Engine


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


SettingsDep = Annotated[Settings, Depends(app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

API_KEY_HELP = "one of the server's API keys, when it has any"
BEARER_HELP = "`Bearer <API key>`: the other way to send the key"
ApiKeyHeader = Annotated[str | None, Header(description=API_KEY_HELP)]
BearerHeader = Annotated[str | None, Header(description=BEARER_HELP)]


def check_api_key(settings: Settings, x_api_key: str | None, authorization: str | None) -> None:
    """With keys configured, X-API-Key or Authorization: Bearer must carry one (compared in constant time)."""
    if not settings.api_keys:
        return
    given = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else "")
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


def deadline_seconds(settings: Settings, x_request_timeout: str | None) -> float:
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


async def require_api_key(
    settings: SettingsDep, x_api_key: ApiKeyHeader = None, authorization: BearerHeader = None
) -> None:
    check_api_key(settings, x_api_key, authorization)


@dataclass(frozen=True)
class Call:
    """What a compute route needs: the service's parts and this request's deadline (its API key was accepted)."""

    request: Request
    settings: Settings
    engine: Engine
    queue: JobQueue
    timeout: float  # seconds


async def service_call(request: Request) -> Call:
    """Headers are read here directly (declared header parameters cost FastAPI ~35 us each per request);
    ``CALL_HEADERS`` documents them in the OpenAPI schema."""
    state, headers = request.app.state, request.headers
    check_api_key(state.settings, headers.get("x-api-key"), headers.get("authorization"))
    timeout = deadline_seconds(state.settings, headers.get("x-request-timeout"))
    return Call(request, state.settings, state.engine, state.queue, timeout)


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]}}  # fmt: skip


# OpenAPI parameters of the routes that take ``CallDep`` (pass as ``openapi_extra``).
CALL_HEADERS: dict[str, Any] = {"parameters": [
    _header("x-api-key", API_KEY_HELP),
    _header("authorization", BEARER_HELP),
    _header("x-request-timeout", "seconds this request may take (504 after); default PARAFEED_REQUEST_TIMEOUT_S"),
]}  # fmt: skip


AuthDep = Depends(require_api_key)
CallDep = Annotated[Call, Depends(service_call)]
