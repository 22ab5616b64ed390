"""Servers, workers and Redis started for a benchmark on free loopback ports, and a lean client to time them.

The client is ``http.client`` on one keep-alive connection: about 0.45 ms per round trip to ``/healthz`` here,
where ``httpx`` takes about 1.2 ms. The benchmarks measure what the *server* adds to a library call, so the
client's own cost should be as small as a client's can be; a user's client adds its own on top.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARAFEED = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LeanClient:
    """POST JSON on one keep-alive connection; reconnects once if the server closed it."""

    def __init__(self, base: str, timeout: float = 120.0) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        for attempt in (0, 1):
            try:
                self.connection.request("POST", path, data, headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> int:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.connection.close()


class Processes:
    """Child processes of a benchmark; ``stop`` ends them (SIGTERM, then SIGKILL after 30 s)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        process = subprocess.Popen([*args], cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started.append(process)
        return process

    def server(
        self, *extra: str, env: dict[str, str] | None = None, device: str | None = "cpu", timeout_s: float = 120.0
    ) -> str:
        """``parafeed serve`` on a free port, once /readyz says ready; returns its base URL. ``device`` None: the
        server's own default (auto)."""
        port = free_port()
        on = ["--device", device] if device else []
        process = self.start(*PARAFEED, "serve", "--port", str(port), *on, *extra, env=env)
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode}")
            try:
                probe = LeanClient(base, timeout=1)
                ready = probe.get("/readyz") == 200
                probe.close()
                if ready:
                    return base
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s")

    def redis(self) -> str | None:
        """A redis-server without persistence on a free port; None when no redis-server is installed."""
        binary = shutil.which("redis-server")
        if binary is None:
            return None
        port = free_port()
        self.start(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        for process in reversed(self.started):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.started.clear()
