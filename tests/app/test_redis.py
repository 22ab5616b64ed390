"""Redis Streams mode against a real Redis, real worker processes and a real server: nothing lost, nothing twice."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from samplers.engine import Engine
from samplers.sampling import sample
from tests.fixtures.servers import RedisServer, start_server, start_worker, stop, wait_ready

pytestmark = pytest.mark.integration

SLOW = {"model": "made-slow", "num_samples": 8, "method": "sequential_naive", "seed": 11}
FAST = {"model": "made-tiny", "num_samples": 3, "method": "jacobi", "seed": 5}


def post_async(url: str, body: dict[str, Any], box: dict[str, Any], timeout: float = 120) -> threading.Thread:
    def run() -> None:
        try:
            headers = {"X-Request-Timeout": str(timeout)}  # the server gives up when the client does
            box["response"] = httpx.post(url, json=body, timeout=timeout + 5, headers=headers)
        except httpx.HTTPError as error:
            box["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_pending_with(redis: RedisServer, consumer: str, timeout: float = 60) -> None:
    client, end = redis.client(), time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            pending = client.xpending_range("parafeed:jobs", "workers", "-", "+", 10)
        except Exception:
            pending = []
        if any(p["consumer"] == consumer for p in pending):
            return
        time.sleep(0.02)
    raise AssertionError(f"no job pending with {consumer}")


def test_answers_flow_through_redis_and_readiness_is_honest(redis_server: RedisServer, server_registry: Path) -> None:
    server, base = start_server(server_registry, redis_server.url, heartbeat_ttl_s="1.5")
    try:
        assert httpx.get(f"{base}/readyz").json()["checks"]["workers"] is False  # no worker yet: not ready
        worker = start_worker(redis_server.url, server_registry, "w1")
        wait_ready(base)
        r = httpx.post(f"{base}/sample", json=FAST, timeout=60)
        assert r.status_code == 200
        assert r.json()["samples"] == sample(Engine("cpu", server_registry), **{**FAST, "num_samples": 3}).samples
        g = httpx.post(f"{base}/gradient", json={"model": "gru-tiny", "method": "scan", "verify": True}, timeout=60)
        assert g.json()["verified"]["max_abs_diff"] <= 1e-5
        stop(worker, signal.SIGKILL)
        time.sleep(2.0)
        assert httpx.get(f"{base}/readyz").status_code == 503  # the heartbeat expired
    finally:
        stop(server)


def test_a_killed_workers_job_is_rerun_elsewhere_and_answered_once(
    redis_server: RedisServer, server_registry: Path
) -> None:
    server, base = start_server(server_registry, redis_server.url)
    first = start_worker(redis_server.url, server_registry, "doomed", claim_idle_ms="1500")
    second = None
    try:
        wait_ready(base)
        box: dict[str, Any] = {}
        thread = post_async(f"{base}/sample", SLOW, box)
        wait_pending_with(redis_server, "doomed")
        stop(first, signal.SIGKILL)  # mid-job
        second = start_worker(redis_server.url, server_registry, "rescuer", claim_idle_ms="1500")
        thread.join(120)
        assert box["response"].status_code == 200, box["response"].json()
        answer = box["response"].json()
        expected = sample(Engine("cpu", server_registry), **SLOW)
        assert answer["samples"] == expected.samples  # the same answer: the seed travelled with the job
        client = redis_server.client()
        assert client.xlen("parafeed:jobs") == 0  # acknowledged and deleted
        assert not client.keys("parafeed:result:*")  # the one result was taken, no second copy waits
        assert len(client.keys("parafeed:done:*")) == 1
    finally:
        for process in (first, second, server):
            if process is not None:
                stop(process)


def test_sigterm_drains_the_job_in_flight(redis_server: RedisServer, server_registry: Path) -> None:
    server, base = start_server(server_registry, redis_server.url)
    worker = start_worker(redis_server.url, server_registry, "draining")
    try:
        wait_ready(base)
        box: dict[str, Any] = {}
        thread = post_async(f"{base}/sample", SLOW, box)
        wait_pending_with(redis_server, "draining")
        assert stop(worker, signal.SIGTERM, timeout=90) == 0
        thread.join(60)
        assert box["response"].status_code == 200
        assert redis_server.client().zcard("parafeed:workers") == 0  # it left the roster
    finally:
        stop(worker)
        stop(server)


def test_a_job_that_keeps_killing_workers_goes_to_the_dead_letter_stream(
    redis_server: RedisServer, server_registry: Path
) -> None:
    server, base = start_server(server_registry, redis_server.url)
    worker = None
    try:
        box: dict[str, Any] = {}
        thread = post_async(f"{base}/sample", FAST, box, timeout=60)
        client = redis_server.client()
        for _ in range(500):  # a "worker" takes the job and dies without a word
            if client.xlen("parafeed:jobs"):
                break
            time.sleep(0.01)
        client.xreadgroup("workers", "ghost", {"parafeed:jobs": ">"}, count=1)
        worker = start_worker(redis_server.url, server_registry, "w1", claim_idle_ms="500", max_deliveries="1")
        thread.join(60)
        assert box["response"].status_code == 500
        assert "dead-letter" in box["response"].json()["detail"]
        assert client.xlen("parafeed:dead") == 1
    finally:
        if worker is not None:
            stop(worker)
        stop(server)


def test_full_queue_answers_503(redis_server: RedisServer, server_registry: Path) -> None:
    server, base = start_server(server_registry, redis_server.url, max_queue="2")
    try:
        boxes = [{} for _ in range(2)]  # type: ignore[var-annotated]
        threads = [post_async(f"{base}/sample", FAST, box, timeout=3) for box in boxes]
        time.sleep(1.0)  # no worker: both wait in the stream
        r = httpx.post(f"{base}/sample", json=FAST, timeout=10)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        for thread in threads:
            thread.join()
    finally:
        stop(server)


def test_a_redis_restart_loses_no_accepted_request(redis_server: RedisServer, server_registry: Path) -> None:
    server, base = start_server(server_registry, redis_server.url)
    worker = start_worker(redis_server.url, server_registry, "w1")
    try:
        wait_ready(base)
        bodies = [{**FAST, "seed": s, "model": m} for s in range(6) for m in ("made-tiny", "pixelcnnpp-tiny")]

        def call(body: dict[str, Any]) -> tuple[int, Any]:
            r = httpx.post(f"{base}/sample", json=body, timeout=90, headers={"X-Request-Timeout": "80"})
            return r.status_code, r.json()

        client = redis_server.client()

        def accepted() -> int:  # jobs in the stream (waiting or running) and jobs already answered
            return int(client.xlen("parafeed:jobs")) + len(client.keys("parafeed:done:*"))

        with ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(call, body) for body in bodies]
            end = time.monotonic() + 30
            while accepted() < len(bodies) and time.monotonic() < end:
                time.sleep(0.01)
            assert accepted() == len(bodies)  # every request accepted before Redis goes down
            redis_server.stop()  # everything in Redis is gone (no persistence)
            time.sleep(1.0)
            redis_server.start()
            results = [f.result(timeout=120) for f in futures]  # nothing hangs
        engine = Engine("cpu", server_registry)
        for body, (status, answer) in zip(bodies, results, strict=True):
            assert status == 200, answer  # accepted, so answered: re-submitted if Redis forgot it
            assert answer["samples"] == sample(engine, **body).samples
    finally:
        stop(worker)
        stop(server)


def test_a_quick_redis_restart_with_a_backlog_loses_nothing(redis_server: RedisServer, server_registry: Path) -> None:
    """Redis comes back empty within a fraction of a second, while every job still waits in the stream: the API
    notices the restart (a broken connection, or Redis's new run_id) and re-submits what the new Redis never heard
    of, so every caller gets its answer."""
    server, base = start_server(server_registry, redis_server.url)
    worker = None
    try:
        bodies = [{**FAST, "seed": s} for s in range(5)]
        boxes: list[dict[str, Any]] = [{} for _ in bodies]
        threads = [post_async(f"{base}/sample", body, box, timeout=60) for body, box in zip(bodies, boxes, strict=True)]
        client = redis_server.client()
        for _ in range(500):  # no worker yet: every job waits in the stream
            if client.xlen("parafeed:jobs") == len(bodies):
                break
            time.sleep(0.01)
        assert client.xlen("parafeed:jobs") == len(bodies)
        redis_server.stop()
        redis_server.start()  # back within ~0.1 s, empty
        worker = start_worker(redis_server.url, server_registry, "w1")
        for thread in threads:
            thread.join(90)
        engine = Engine("cpu", server_registry)
        for body, box in zip(bodies, boxes, strict=True):
            assert box["response"].status_code == 200, box
            assert box["response"].json()["samples"] == sample(engine, **body).samples
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
