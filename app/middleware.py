"""ASGI middleware: request IDs, API keys (``app.auth``), the body read under the request's deadline and a size
limit (413 before parsing, 408 past the deadline), access logs and request metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app import metrics
from app.auth import Authenticator
from app.deps import TimeoutHeaderError, request_timeout
from app.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("parafeed.access")
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ENDPOINTS = {"/sample", "/gradient", "/infer", "/models", "/healthz", "/readyz", "/metrics"}


class ServiceMiddleware:
    """Every response gets X-Request-ID; a request without an accepted key gets 401 before its body is read;
    bodies over ``max_body`` get 413, bodies slower than the request's deadline 408; each request is logged and
    counted. The request's arrival time goes into ``scope["state"]["arrived"]``: its deadline counts from there."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings, self.max_body = app, settings, settings.max_body_bytes
        self.auth = Authenticator(settings.api_keys, settings.metrics_token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["arrived"] = request_id, time.time()
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        body = await self._admit(receive, headers, scope.get("path", ""), send_with_id)
        if body is not None:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: disconnect notifications

            try:
                await self.app(scope, replay, send_with_id)
            except Exception:  # an error nobody handled: a 500 with our request id, logged with its traceback
                log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
                if not status.get("started"):
                    await self._send_json(send_with_id, 500, "internal error")
        elapsed = time.perf_counter() - start
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        model = scope["state"].get("model", "-")
        metrics.REQUESTS.labels(endpoint, model, str(status["code"])).inc()
        metrics.LATENCY.labels(endpoint).observe(elapsed)
        fields = {"request_id": request_id, "method": scope.get("method"), "path": path, "status": status["code"]}
        log.info("request", extra={**fields, "ms": round(elapsed * 1000, 3), "model": model})

    async def _admit(self, receive: Receive, headers: dict[str, str], path: str, send: Send) -> bytes | None:
        """The body of an admitted request; None once a refusal was sent (401, 413, 408)."""
        if not self.auth.allows(path, headers):
            await self._send_json(send, 401, "missing or wrong API key", [(b"www-authenticate", b"Bearer")])
            return None
        try:  # a malformed header gets its 422 from the route; the upload is bounded all the same
            timeout = request_timeout(self.settings, headers.get("x-request-timeout"))
        except TimeoutHeaderError:
            timeout = self.settings.request_timeout_s
        try:
            body = await asyncio.wait_for(self._read_body(receive, headers), timeout)
        except TimeoutError:
            await self._send_json(send, 408, f"the body did not arrive within the request's deadline ({timeout:g} s)")
            return None
        if body is None:
            await self._send_json(send, 413, f"request body larger than {self.max_body} bytes")
        return body

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The whole request body, or None once it exceeds the limit (declared or streamed): 413 before parsing."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _send_json(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
