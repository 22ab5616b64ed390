"""FastAPI dependencies: the engine, the queue, the settings and the request deadline (API keys: ``app.auth``).

Compute routes take one dependency, ``CallDep``: the API key checked, the deadline read, the service's parts
handed over. FastAPI resolves each dependency and declared header for every request (30-50 us apiece here), so
the hot routes pay for one instead of seven plus three headers. All are ``async def``: they only read request
state, and a plain ``def`` would cost a hop through the thread pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

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


class TimeoutHeaderError(ValueError):
    """X-Request-Timeout that is not a number of seconds within the server's bounds."""


def request_timeout(settings: Settings, x_request_timeout: str | None) -> float:
    """Seconds this request may take, from its arrival: X-Request-Timeout in (0, max_request_timeout_s], or the
    default. Past it: 504 (the body upload counts too)."""
    if x_request_timeout is None:
        return settings.request_timeout_s
    try:
        value = float(x_request_timeout)
    except ValueError:
        raise TimeoutHeaderError("must be seconds as a number") from None
    if not 0 < value <= settings.max_request_timeout_s:  # also refuses NaN
        raise TimeoutHeaderError(f"must be in (0, {settings.max_request_timeout_s}]")
    return value


@dataclass(frozen=True)
class Call:
    """What a compute route needs: the service's parts and this request's deadline (its API key, checked by the
    middleware for every route, was accepted)."""

    request: Request
    settings: Settings
    engine: Engine
    queue: JobQueue
    deadline: float  # unix time: the request's arrival plus its timeout

    @property
    def timeout(self) -> float:
        """Seconds left until the deadline."""
        return max(self.deadline - time.time(), 0.0)


async def service_call(request: Request) -> Call:
    """Headers are read here directly (declared header parameters cost FastAPI ~35 us each per request);
    ``CALL_HEADERS`` documents them in the OpenAPI schema."""
    state = request.app.state
    try:
        timeout = request_timeout(state.settings, request.headers.get("x-request-timeout"))
    except TimeoutHeaderError as error:
        raise HTTPException(422, [{"loc": ["header", "x-request-timeout"], "msg": str(error),
                                   "type": "value_error"}]) from None  # fmt: skip
    arrived = request.scope.get("state", {}).get("arrived", time.time())
    return Call(request, state.settings, state.engine, state.queue, arrived + timeout)


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]}}  # fmt: skip


# OpenAPI parameters of the routes that take ``CallDep`` (pass as ``openapi_extra``).
CALL_HEADERS: dict[str, Any] = {"parameters": [
    _header("x-api-key", API_KEY_HELP),
    _header("authorization", BEARER_HELP),
    _header("x-request-timeout", "seconds this request may take (504 after); default PARAFEED_REQUEST_TIMEOUT_S"),
]}  # fmt: skip


CallDep = Annotated[Call, Depends(service_call)]
