"""ASGI middleware: request IDs, a body size limit (413 before parsing), access logs and request metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("parafeed.access")
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ENDPOINTS = {"/sample", "/gradient", "/infer", "/models", "/healthz", "/readyz", "/metrics"}


class ServiceMiddleware:
    """Every response gets X-Request-ID; bodies over ``max_body`` get 413; each request is logged and counted."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        body = await self._read_body(receive, headers)
        if body is None:
            await self._send_json(send_with_id, 413, f"request body larger than {self.max_body} bytes")
        else:
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
    async def _send_json(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
