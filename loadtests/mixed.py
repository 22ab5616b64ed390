"""Mixed load with hostile clients: heavy /gradient and /infer jobs, light /sample requests, and clients that
attack the transport (slowloris, oversized headers). The light requests must stay fast; the attacks must be
refused. Headless and bounded (``python -m loadtests.run --scenario mixed``).

Users (fixed counts): 4 heavy clients looping jobs of seconds each, 1 light client (one sample, then a short
pause), 2 hostile clients. The run fails (exit code 1) when the light requests' p99 exceeds its threshold, when any
light or heavy request fails, or when the server does not refuse an attack the way it should (431 at once for
oversized headers; 408 or a closed connection for a slowloris within the header timeout plus a margin).

    PARAFEED_LOAD_LIGHT_P99_MS (250)   the light requests' p99 threshold
    PARAFEED_LOAD_SLOWLORIS_S (15)     how long a slowloris connection may stay open
"""

from __future__ import annotations

import os
import random
import socket
import time
from urllib.parse import urlsplit

from locust import HttpUser, User, between, constant, events, task
from locust.env import Environment

LIGHT_P99_MS = float(os.environ.get("PARAFEED_LOAD_LIGHT_P99_MS", "250"))
SLOWLORIS_S = float(os.environ.get("PARAFEED_LOAD_SLOWLORIS_S", "15"))
LIGHT = "/sample (light)"
HEAVY = [
    ("/gradient", {"model": "gru-fmnist", "batch": 16, "method": "scan", "verify": True}),
    ("/gradient", {"model": "rnn-fmnist", "batch": 8, "method": "jacobi"}),
    ("/infer", {"model": "densenet-fmnist", "batch": 16, "method": "jacobi", "verify": True}),
    ("/infer", {"model": "gru-fmnist", "batch": 16, "method": "jacobi"}),
]


class HeavyUser(HttpUser):
    """Loops jobs of seconds: what used to stall the server for everybody."""

    fixed_count = 4
    wait_time = constant(0)

    @task
    def heavy(self) -> None:
        path, body = random.choice(HEAVY)
        with self.client.post(path, json={**body, "seed": random.randrange(1000)}, name=f"{path} (heavy)",
                              catch_response=True, timeout=120) as r:  # fmt: skip
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")


class LightUser(HttpUser):
    """One sample at a time: what must stay fast whatever else the server does."""

    fixed_count = 1
    wait_time = between(0.05, 0.1)

    @task
    def light(self) -> None:
        body = {"model": "made-fmnist", "num_samples": 1, "method": "jacobi", "seed": random.randrange(2**31)}
        with self.client.post("/sample", json=body, name=LIGHT, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")


class HostileUser(User):
    """Attacks the transport; a request 'succeeds' when the server refuses it the way it should."""

    fixed_count = 2
    wait_time = between(0.5, 1.0)

    def address(self) -> tuple[str, int]:
        parts = urlsplit(str(self.host))
        return str(parts.hostname or "127.0.0.1"), int(parts.port or 80)

    def record(self, name: str, start: float, problem: str | None) -> None:
        elapsed_ms = (time.perf_counter() - start) * 1000
        error = RuntimeError(problem) if problem else None
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="ATTACK", name=name, response_time=elapsed_ms, response_length=0, exception=error
        )

    @task
    def oversized_header(self) -> None:
        start = time.perf_counter()
        with socket.create_connection(self.address(), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
            answer = sock.recv(32)
        self.record("oversized header", start, None if answer.startswith(b"HTTP/1.1 431") else f"got {answer!r}")

    @task
    def slowloris(self) -> None:
        start = time.perf_counter()
        with socket.create_connection(self.address(), timeout=1.0) as sock:
            problem: str | None = "the connection stayed open"
            try:
                sock.sendall(b"POST /sample HTTP/1.1\r\nHost: x\r\n")
                while time.perf_counter() - start < SLOWLORIS_S:
                    sock.sendall(b"X-Slow: 1\r\n")  # a header now and then, never the end of them
                    try:
                        answer = sock.recv(32)
                    except TimeoutError:
                        continue
                    problem = None if answer == b"" or answer.startswith(b"HTTP/1.1 408") else f"got {answer!r}"
                    break
            except OSError:  # reset or broken pipe: cut off
                problem = None
        self.record("slowloris", start, problem)


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def enforce_thresholds(environment: Environment, **_: object) -> None:
    stats, problems = environment.stats, []
    light = stats.get(LIGHT, "POST")
    if light.num_requests == 0:
        problems.append("no light requests were made")
    elif light.get_response_time_percentile(0.99) > LIGHT_P99_MS:
        problems.append(f"light p99 {light.get_response_time_percentile(0.99):.0f} ms > {LIGHT_P99_MS:.0f} ms")
    for entry in stats.entries.values():
        if entry.num_failures:
            problems.append(f"{entry.name}: {entry.num_failures} of {entry.num_requests} failed")
    if problems:
        print("THRESHOLDS FAILED: " + "; ".join(problems))
        environment.process_exit_code = 1
    else:
        print(f"thresholds met: light p99 {light.get_response_time_percentile(0.99):.0f} ms over "
              f"{light.num_requests} requests; every attack refused")  # fmt: skip
