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

SLOW = {"model": "made-slow", "num_samples": 8, "method": "sequential", "seed": 11}
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


def source_for(redis_server: RedisServer, name: str, **settings: Any):  # type: ignore[no-untyped-def]
    from app.queues.redis_worker import RedisWorkSource
    from app.settings import Settings

    return RedisWorkSource(Settings(redis_url=redis_server.url, **settings), name)


def add_jobs(redis_server: RedisServer, count: int) -> list[str]:
    from app.jobs import Job

    client = redis_server.client()
    jobs = [Job("sample", {"model": "made-tiny"}, deadline=time.time() + 60) for _ in range(count)]
    for job in jobs:
        client.xadd("parafeed:jobs", {"job": job.to_json()})
    return [job.id for job in jobs]


def test_a_hand_back_is_not_counted_as_a_failed_delivery(redis_server: RedisServer) -> None:
    source = source_for(redis_server, "w1", heartbeat_s=60)
    add_jobs(redis_server, 1)
    (job,) = source.fetch(1, 5.0)
    source.release(job)
    (pending,) = redis_server.client().xpending_range("parafeed:jobs", "workers", "-", "+", 1)
    assert pending["times_delivered"] == 1
    assert pending["time_since_delivered"] > 1000  # idle: the next reclaim anywhere takes it at once
    source.leave()


def test_reclaim_reaches_a_dead_consumers_job_behind_many_live_ones(redis_server: RedisServer) -> None:
    client = redis_server.client()
    ids = add_jobs(redis_server, 40)
    client.xgroup_create("parafeed:jobs", "workers", id="0", mkstream=True)
    live = client.xreadgroup("workers", "alive", {"parafeed:jobs": ">"}, count=39)[0][1]
    client.xreadgroup("workers", "dead", {"parafeed:jobs": ">"}, count=1)
    renewing = threading.Event()

    def renew() -> None:  # the live consumer renews its leases far more often than claim_idle_ms
        while not renewing.is_set():
            client.xclaim("parafeed:jobs", "workers", "alive", 0, [e for e, _ in live], justid=True)
            time.sleep(0.02)

    threading.Thread(target=renew, daemon=True).start()
    source = source_for(redis_server, "rescuer", claim_idle_ms=200, heartbeat_s=60)
    time.sleep(0.3)  # the dead consumer's job idles past claim_idle_ms
    found: list[Any] = []
    end = time.monotonic() + 10
    while not found and time.monotonic() < end:
        source.last_claim = 0.0  # reclaim on every read (each XAUTOCLAIM call scans a window of the pending list)
        found += source.fetch(1, 0.3)
    renewing.set()
    assert [job.id for job in found] == [ids[-1]]
    source.leave()


def test_the_heartbeat_survives_a_redis_restart(redis_server: RedisServer) -> None:
    source = source_for(redis_server, "w1", heartbeat_s=0.1)
    add_jobs(redis_server, 1)
    assert source.fetch(1, 5.0)  # holds a job: the heartbeat renews its lease (XCLAIM needs the group)
    redis_server.stop()
    time.sleep(0.3)
    redis_server.start()  # the group is gone: NOGROUP must not kill the heartbeat
    time.sleep(0.5)
    assert redis_server.client().zscore("parafeed:workers", "w1") is not None
    source.leave()


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


def test_a_stalled_worker_loop_stops_vouching_for_its_jobs(redis_server: RedisServer) -> None:
    stuck = source_for(redis_server, "stuck", heartbeat_s=0.1, worker_stall_s=0.5, claim_idle_ms=800)
    (job_id,) = add_jobs(redis_server, 1)
    assert stuck.fetch(1, 5.0)  # taken; then the loop hangs and never beats again
    rescuer = source_for(redis_server, "rescuer", heartbeat_s=60, claim_idle_ms=800)
    found: list[Any] = []
    end = time.monotonic() + 10
    while not found and time.monotonic() < end:
        rescuer.last_claim = 0.0
        found = rescuer.fetch(1, 0.3)
        time.sleep(0.05)
    assert [j.id for j in found] == [job_id]  # reclaimed: the stalled worker's lease was not renewed
    beat = redis_server.client().zscore("parafeed:workers", "stuck")
    time.sleep(0.5)
    assert redis_server.client().zscore("parafeed:workers", "stuck") == beat  # no heartbeat either
    stuck.leave()
    rescuer.leave()


def test_a_beating_worker_keeps_its_jobs(redis_server: RedisServer) -> None:
    alive = source_for(redis_server, "alive", heartbeat_s=0.1, worker_stall_s=0.5, claim_idle_ms=800)
    add_jobs(redis_server, 1)
    assert alive.fetch(1, 5.0)
    rescuer = source_for(redis_server, "rescuer", heartbeat_s=60, claim_idle_ms=800)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        alive.beat()
        rescuer.last_claim = 0.0
        assert rescuer.fetch(1, 0.05) == []
        time.sleep(0.05)
    alive.leave()
    rescuer.leave()


def test_a_busy_worker_gets_a_new_job_without_asking_redis(redis_server: RedisServer) -> None:
    """The reader blocks on the stream while the solver iterates: ``ready`` learns of a job without I/O."""
    source = source_for(redis_server, "w1", heartbeat_s=60)
    try:
        assert source.ready(1) is False
        (job_id,) = add_jobs(redis_server, 1)
        end = time.monotonic() + 5
        while not source.ready(1) and time.monotonic() < end:
            time.sleep(0.005)
        assert [job.id for job in source.fetch(1, 0.0)] == [job_id]
    finally:
        source.leave()


def test_a_worker_without_room_reads_nothing_ahead(redis_server: RedisServer) -> None:
    source = source_for(redis_server, "full", heartbeat_s=60)
    client = redis_server.client()
    try:
        assert source.fetch(0, 0.0) == []  # no free rows
        add_jobs(redis_server, 2)
        time.sleep(0.6)  # longer than a blocking read
        assert client.xpending("parafeed:jobs", "workers")["pending"] == 0  # still in the stream for others
        assert source.ready(1) is False  # room again: the reader reads one job
        end = time.monotonic() + 5
        while not source.ready(1) and time.monotonic() < end:
            time.sleep(0.005)
        assert client.xpending("parafeed:jobs", "workers")["pending"] == 1  # one, not both
    finally:
        source.leave()


def test_a_job_read_but_never_taken_is_handed_back_on_leaving(redis_server: RedisServer) -> None:
    source = source_for(redis_server, "leaving", heartbeat_s=60)
    client = redis_server.client()
    add_jobs(redis_server, 1)
    end = time.monotonic() + 5
    while not source.ready(1) and time.monotonic() < end:
        time.sleep(0.005)
    source.leave()  # the solver never fetched it
    (pending,) = client.xpending_range("parafeed:jobs", "workers", "-", "+", 1)
    assert pending["times_delivered"] == 1
    assert pending["time_since_delivered"] > 1000  # idle: the next reclaim anywhere takes it at once


def test_a_draining_worker_hands_back_the_job_it_read_ahead_at_once(redis_server: RedisServer) -> None:
    source = source_for(redis_server, "draining", heartbeat_s=60)
    client = redis_server.client()
    try:
        add_jobs(redis_server, 1)
        end = time.monotonic() + 5
        while not source.ready(1) and time.monotonic() < end:
            time.sleep(0.005)
        source.draining.set()  # SIGTERM: the solver will fetch nothing more
        end = time.monotonic() + 5
        while source.inbox and time.monotonic() < end:
            time.sleep(0.01)
        assert not source.inbox
        (pending,) = client.xpending_range("parafeed:jobs", "workers", "-", "+", 1)
        assert pending["time_since_delivered"] > 1000  # handed back long before the drain timeout
        add_jobs(redis_server, 1)
        time.sleep(0.6)
        assert client.xpending("parafeed:jobs", "workers")["pending"] == 1  # and nothing new was read
    finally:
        source.leave()
