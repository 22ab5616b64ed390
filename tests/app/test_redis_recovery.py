"""Recovery through Redis: a dead worker's jobs come back in bulk, and an unusable Redis is named as such."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from samplers.engine import Engine
from samplers.sampling import sample
from tests.fixtures.servers import RedisServer, start_server, start_worker, stop, wait_ready

pytestmark = pytest.mark.integration
JOBS = 32


def pending_with(redis: RedisServer, consumer: str) -> int:
    entries = redis.client().xpending_range("parafeed:jobs", "workers", "-", "+", 1000)
    return sum(1 for entry in entries if entry["consumer"] == consumer)


def test_a_killed_worker_holding_32_jobs_has_them_all_answered_within_15_s(
    redis_server: RedisServer, server_registry: Path
) -> None:
    server, base = start_server(server_registry, redis_server.url)
    doomed = start_worker(redis_server.url, server_registry, "doomed", max_batch_rows="64", max_samples="64")
    survivor = None
    bodies = [
        {"model": "made-slow", "num_samples": 1, "method": "sequential_naive", "seed": seed} for seed in range(JOBS)
    ]
    answers: dict[int, httpx.Response] = {}
    try:
        wait_ready(base)

        def post(index: int) -> None:
            answers[index] = httpx.post(f"{base}/sample", json=bodies[index], timeout=60)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(JOBS)]
        for thread in threads:
            thread.start()
        end = time.monotonic() + 30
        while pending_with(redis_server, "doomed") < JOBS:  # it holds every job, mid-solve
            assert time.monotonic() < end, pending_with(redis_server, "doomed")
            time.sleep(0.02)
        stop(doomed, signal.SIGKILL)
        killed = time.monotonic()
        survivor = start_worker(redis_server.url, server_registry, "survivor", max_batch_rows="64", max_samples="64")
        for thread in threads:
            thread.join()
        assert time.monotonic() - killed < 15.0
        engine = Engine("cpu", server_registry)
        for index, response in answers.items():
            assert response.status_code == 200, response.text
            assert response.json()["samples"] == sample(engine, **bodies[index]).samples  # bitwise the answer
        assert redis_server.client().xlen("parafeed:jobs") == 0  # each acknowledged, none left to run twice
    finally:
        for process in (survivor, server):
            if process is not None:
                stop(process)


def test_an_unreachable_redis_is_a_503_that_says_so(server_registry: Path) -> None:
    from benchmarks.processes import free_port

    server, base = start_server(server_registry, f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    try:
        assert httpx.get(f"{base}/readyz", timeout=10).json()["checks"]["queue"] is False
        r = httpx.post(f"{base}/sample", json={"model": "made-tiny", "num_samples": 1}, timeout=60)
        assert r.status_code == 503
        assert "cannot be reached" in r.json()["detail"]
        assert r.headers["retry-after"]
    finally:
        stop(server)


def test_redis_refusing_the_password_is_a_503_that_says_so(redis_server: RedisServer, server_registry: Path) -> None:
    redis_server.client().config_set("requirepass", "right")
    wrong = redis_server.url.replace("redis://", "redis://:wrong@")
    server, base = start_server(server_registry, wrong)
    try:
        r = httpx.post(f"{base}/sample", json={"model": "made-tiny", "num_samples": 1}, timeout=60)
        assert r.status_code == 503
        assert "credentials" in r.json()["detail"]
    finally:
        stop(server)


def test_a_caller_that_hangs_up_stops_its_job_on_a_redis_worker(
    redis_server: RedisServer, server_registry: Path
) -> None:
    from benchmarks.processes import free_port

    port = free_port()
    server, base = start_server(server_registry, redis_server.url)
    worker = start_worker(redis_server.url, server_registry, "w1", args=["--metrics-port", str(port)])
    slow = {"model": "made-slow", "num_samples": 16, "method": "sequential_naive", "seed": 3}  # seconds of work

    def gone() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        found = [
            line for line in text.splitlines() if line.startswith('parafeed_jobs_total{kind="sample",outcome="499"}')
        ]
        return float(found[0].split()[-1]) if found else 0.0

    try:
        wait_ready(base)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/sample", json=slow, timeout=0.5)
        hung_up = time.monotonic()
        while gone() < 1:
            assert time.monotonic() - hung_up < 3.0, "the worker kept the abandoned job"
            time.sleep(0.05)
    finally:
        stop(worker)
        stop(server)


def test_readiness_does_not_flap_when_redis_restarts(redis_server: RedisServer, server_registry: Path) -> None:
    server, base = start_server(server_registry, redis_server.url)
    worker = start_worker(redis_server.url, server_registry, "w1")
    try:
        wait_ready(base)
        redis_server.stop()
        redis_server.start()  # forgets everything, the workers' heartbeats included
        end, answers = time.monotonic() + 3.0, []
        while time.monotonic() < end:
            r = httpx.get(f"{base}/readyz", timeout=5)
            answers.append(r.status_code if r.status_code == 200 else r.text)
            time.sleep(0.1)
        assert set(answers) == {200}, answers
    finally:
        stop(worker)
        stop(server)
