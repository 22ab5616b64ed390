"""The worker side of Redis Streams against a real Redis: leases, reclaims, hand-backs and the reader thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from app.jobs import Job
from app.queues.redis_worker import RedisWorkSource
from app.settings import Settings
from tests.fixtures.servers import RedisServer

pytestmark = pytest.mark.integration


def source_for(redis_server: RedisServer, name: str, **settings: Any) -> RedisWorkSource:
    return RedisWorkSource(Settings(redis_url=redis_server.url, **settings), name)


def add_jobs(redis_server: RedisServer, count: int) -> list[str]:
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
