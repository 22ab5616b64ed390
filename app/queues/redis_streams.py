"""Redis Streams between API replicas and ``parafeed worker`` processes on any number of hosts.

Keys (prefix ``P``): ``P:jobs`` (stream, consumer group ``workers``), ``P:result:<id>`` (a list holding the one
answer), ``P:done:<id>`` (the answer was delivered), ``P:dead`` (dead-letter stream), ``P:workers`` (sorted
set of heartbeats).

Guarantees:
- at-least-once execution: a job stays pending until acknowledged; a live worker renews the lease on the jobs
  it holds with every heartbeat (XCLAIM JUSTID resets their idle time without counting a delivery), but only while
  its loop keeps beating: a worker that dies, or whose loop hangs for ``worker_stall_s``, stops renewing, and after
  ``claim_idle_ms`` its jobs are reclaimed by another (XAUTOCLAIM) and re-run, with the same answer (the seed
  travels in the job);
- exactly-once replies: one Lua script writes the result only if the done-marker did not exist (SET NX), then
  acknowledges and deletes the entry, so the result is written before the acknowledgement and a job run twice is
  answered once; the API reads it with BLMOVE (rotating the one-element list onto itself) and only then deletes
  it, so no reconnect can lose it (no pub/sub);
- poison jobs: after ``max_deliveries`` attempts a job goes to ``P:dead`` and its caller gets a 500;
- Redis restarts and blips: both sides reconnect with backoff; an API process notices a restart (a connection
  error, or a new Redis ``run_id`` even when the client reconnected silently) and re-submits every job it still
  waits for that Redis forgot (restart without persistence); workers re-create the consumer group;
- bounded: ``XLEN P:jobs`` (waiting + running) beyond ``max_queue`` -> 503; workers read at most as many jobs
  as they have free rows.
Payloads are JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import redis
import redis.asyncio as aredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.jobs import Job, Result
from app.queues.base import QueueFullError
from app.settings import Settings

log = logging.getLogger("parafeed.redis")
GROUP = "workers"
DRAIN_ATTEMPTS = 5  # delivery tries per result once a worker is shutting down (about 3 s of backoff)
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: done, result, stream   ARGV: result json, ttl, group, entry id
DELIVER = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return 1
"""


class Keys:
    def __init__(self, prefix: str) -> None:
        self.jobs, self.dead, self.workers = f"{prefix}:jobs", f"{prefix}:dead", f"{prefix}:workers"
        self.prefix = prefix

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5, supported_errors=TRANSIENT)


# -- API side -------------------------------------------------------------------------------------------------
class RedisQueue:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self.settings, self.keys = settings, Keys(settings.stream_prefix)
        self.client = aredis.from_url(settings.redis_url, retry=_retry(), socket_timeout=5, decode_responses=True,
                                      health_check_interval=10)  # fmt: skip
        self.entries: dict[str, str] = {}  # job id -> stream entry id, for jobs this process waits for
        # Redis's run_id changes when the server restarts: a job submitted under another run_id may be forgotten
        # (no persistence), even if the client reconnected transparently and never saw an error.
        self.run_ids: dict[str, str | None] = {}  # job id -> run_id when last known to be in Redis
        self._run_id: str | None = None
        self._run_id_at = -1.0

    async def start(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except TRANSIENT:
            log.warning("redis unreachable at start; will retry on use")

    async def stop(self) -> None:
        await self.client.aclose()

    async def submit(self, job: Job) -> None:
        try:
            if await self.client.xlen(self.keys.jobs) >= self.settings.max_queue:
                raise QueueFullError(f"{self.settings.max_queue} jobs waiting or running")
            run_id = await self.server_run_id()
            self.entries[job.id] = str(await self.client.xadd(self.keys.jobs, {"job": job.to_json()}))
            self.run_ids[job.id] = run_id
        except TRANSIENT as error:
            raise QueueFullError(f"queue unreachable: {error}") from None

    async def result(self, job: Job, timeout: float) -> Result | None:
        deadline = time.monotonic() + timeout
        backoff = 0.05
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    key = self.keys.result(job.id)
                    # Read without removing (rotate the one-element list onto itself), then delete: a connection
                    # lost between the two leaves the result in place for the next attempt.
                    raw = await self.client.blmove(key, key, min(left, 1.0), "LEFT", "RIGHT")  # type: ignore[arg-type]
                    if raw is not None:
                        await self.client.delete(key)
                        return Result.from_json(raw)
                    backoff = 0.05
                    run_id = await self.server_run_id()
                    if run_id != self.run_ids.get(job.id):  # Redis restarted while we waited
                        await self._resubmit_if_forgotten(job)
                        self.run_ids[job.id] = run_id
                except TRANSIENT:
                    await asyncio.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
                    backoff = min(backoff * 2, 1.0)
                    await self._resubmit_if_forgotten(job)
            return None
        finally:
            self.entries.pop(job.id, None)
            self.run_ids.pop(job.id, None)

    async def server_run_id(self) -> str | None:
        """Redis's run_id, asked at most once a second for all waiting requests of this process."""
        if time.monotonic() - self._run_id_at >= 1.0:
            self._run_id_at = time.monotonic()
            info = await self.client.info("server")
            self._run_id = str(info.get("run_id")) if info.get("run_id") else None
        return self._run_id

    async def _resubmit_if_forgotten(self, job: Job) -> None:
        """After a connection error: if Redis lost the job (restart without persistence), submit it again."""
        try:
            entry = self.entries.get(job.id)
            if entry and await self.client.xrange(self.keys.jobs, entry, entry):
                return
            if await self.client.exists(self.keys.done(job.id), self.keys.result(job.id)):
                return
            await self.start()  # the group may be gone too
            self.entries[job.id] = str(await self.client.xadd(self.keys.jobs, {"job": job.to_json()}))
            log.warning("job re-submitted after redis lost it", extra={"job": job.id})
        except TRANSIENT:
            pass  # still down: try again on the next error

    async def depth(self) -> int:
        return int(await self.client.xlen(self.keys.jobs))

    async def workers(self) -> int:
        since = time.time() - self.settings.heartbeat_ttl_s
        return int(await self.client.zcount(self.keys.workers, since, "+inf"))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except TRANSIENT:
            return False


# -- worker side ----------------------------------------------------------------------------------------------
class RedisWorkSource:
    def __init__(self, settings: Settings, name: str) -> None:
        assert settings.redis_url
        self.settings, self.name, self.keys = settings, name, Keys(settings.stream_prefix)
        self.client = redis.from_url(settings.redis_url, retry=_retry(), socket_timeout=5, decode_responses=True)
        self.deliver = self.client.register_script(DELIVER)
        self.entries: dict[str, str] = {}  # job id -> entry id of jobs this worker holds (guarded by lock)
        self.lock = threading.Lock()
        self.last_claim = 0.0
        self.claim_cursor = "0-0"  # XAUTOCLAIM scans a window per call: resume where the last call stopped
        self.backoff = 0.05
        self.ensure_group()
        # Heartbeats and lease renewal run on their own thread and connection, so a long turn of the worker loop
        # (a verification re-solve, a big gradient) never makes live jobs look abandoned.
        self.heart = redis.from_url(settings.redis_url, socket_timeout=5, decode_responses=True)
        self.last_beat = time.monotonic()
        self.stopped = threading.Event()
        self.draining = threading.Event()  # set on SIGTERM: results Redis keeps refusing are left for a reclaim
        threading.Thread(target=self._heartbeat, name=f"heartbeat-{name}", daemon=True).start()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except TRANSIENT:
            pass

    def _down(self, error: Exception) -> None:
        log.warning("redis unavailable, backing off", extra={"error": str(error), "sleep_s": self.backoff})
        time.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, 2.0)

    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]:
        if max_jobs <= 0:
            if timeout_s:
                time.sleep(min(timeout_s, 0.05))
            return []
        jobs: list[tuple[str, Job]] = []  # recorded as held only when returned, even if a later call fails
        try:
            jobs += self._reclaim(max_jobs)
            if len(jobs) < max_jobs:
                block = int(timeout_s * 1000) if timeout_s > 0 and not jobs else None
                streams: dict[Any, Any] = {self.keys.jobs: ">"}
                reply: Any = self.client.xreadgroup(GROUP, self.name, streams, count=max_jobs - len(jobs), block=block)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        job = self._job(entry_id, fields)
                        if job is not None:
                            jobs.append((entry_id, job))
            self.backoff = 0.05
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self.ensure_group()  # Redis restarted without the group: make it again
        except TRANSIENT as error:
            self._down(error)
        return self._hold(jobs)

    def _hold(self, jobs: list[tuple[str, Job]]) -> list[Job]:
        """Record the jobs handed to the worker; a second entry of a job already held here is acknowledged."""
        held = []
        with self.lock:
            for entry_id, job in jobs:
                if job.id in self.entries and self.entries[job.id] != entry_id:
                    with contextlib.suppress(*TRANSIENT):
                        self.client.xack(self.keys.jobs, GROUP, entry_id)
                        self.client.xdel(self.keys.jobs, entry_id)
                    continue
                self.entries[job.id] = entry_id
                held.append(job)
        return held

    def _job(self, entry_id: str, fields: dict[Any, Any]) -> Job | None:
        try:
            job = Job.from_json(fields["job"])
        except (KeyError, ValueError, TypeError):
            log.error("malformed job dropped to the dead-letter stream", extra={"entry": entry_id})
            self.client.xadd(self.keys.dead, {"entry": entry_id, "reason": "malformed", **fields})
            self.client.xack(self.keys.jobs, GROUP, entry_id)
            self.client.xdel(self.keys.jobs, entry_id)
            return None
        return job

    def _reclaim(self, max_jobs: int) -> list[tuple[str, Job]]:
        """Jobs of workers silent for claim_idle_ms: take them over; bury the ones tried too often."""
        if time.monotonic() - self.last_claim < min(self.settings.claim_idle_ms / 4000, 1.0):
            return []
        self.last_claim = time.monotonic()
        idle, cursor = self.settings.claim_idle_ms, self.claim_cursor
        reply: Any = self.client.xautoclaim(self.keys.jobs, GROUP, self.name, idle, cursor, count=max_jobs)
        self.claim_cursor = str(reply[0]) if reply else "0-0"
        claimed = reply[1] if reply else []
        jobs: list[tuple[str, Job]] = []
        for entry_id, fields in claimed:
            if fields is None:  # deleted meanwhile
                continue
            info: Any = self.client.xpending_range(self.keys.jobs, GROUP, entry_id, entry_id, 1)
            deliveries = int(info[0]["times_delivered"]) if info else 1
            job = self._job(entry_id, fields)
            if job is None:
                continue
            if deliveries > self.settings.max_deliveries:
                self._bury(job, entry_id, deliveries)
                continue
            log.warning("reclaimed a job from a silent worker", extra={"job": job.id, "deliveries": deliveries})
            jobs.append((entry_id, job))
        return jobs

    def _bury(self, job: Job, entry_id: str, deliveries: int) -> None:
        self.client.xadd(self.keys.dead, {"job": job.to_json(), "deliveries": str(deliveries)})
        detail = f"job failed {deliveries - 1} times (workers died running it); moved to the dead-letter stream"
        self._deliver(job, entry_id, Result.error(job.id, 500, detail))

    def complete(self, job: Job, result: Result) -> None:
        """Write the result (once), then acknowledge: retried until Redis takes it."""
        with self.lock:
            entry = self.entries.pop(job.id, None)
        self._deliver(job, entry, result)

    def _deliver(self, job: Job, entry: str | None, result: Result) -> None:
        """Retried until Redis takes it; while draining, at most ``DRAIN_ATTEMPTS`` tries: an unacknowledged job is
        reclaimed and re-run by another worker (same seed, same answer), so giving up loses nothing."""
        attempts = 0
        while True:
            try:
                keys = [self.keys.done(job.id), self.keys.result(job.id), self.keys.jobs]
                self.deliver(keys=keys, args=[result.to_json(), self.settings.result_ttl_s, GROUP, entry or "0-0"])
                return
            except TRANSIENT as error:
                self._down(error)
            except ResponseError as error:  # e.g. OOM or READONLY: keep the result, try again shortly
                log.error("redis refused a result; retrying", extra={"job": job.id, "error": str(error)})
                self._down(error)
            attempts += 1
            if self.draining.is_set() and attempts >= DRAIN_ATTEMPTS:
                log.error("result not delivered before shutdown; the job will be reclaimed", extra={"job": job.id})
                return

    def release(self, job: Job) -> None:
        """Hand a job back at once: mark it idle long enough that any worker's next reclaim takes it. JUSTID:
        a hand-back is not a failed delivery."""
        with self.lock:
            entry = self.entries.pop(job.id, None)
        if entry is None:
            return
        idle = self.settings.claim_idle_ms + 1
        with contextlib.suppress(*TRANSIENT, ResponseError):  # else it is reclaimed after claim_idle_ms anyway
            self.client.xclaim(self.keys.jobs, GROUP, self.name, 0, [entry], idle=idle, justid=True)

    def beat(self) -> None:
        """The worker loop made progress: the heartbeat thread may keep announcing it and renewing its leases."""
        self.last_beat = time.monotonic()

    def stalled(self) -> bool:
        """The loop has not beaten for ``worker_stall_s``: it hangs, so stop vouching for it."""
        return time.monotonic() - self.last_beat > self.settings.worker_stall_s

    def _heartbeat(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_s):
            if self.stalled():  # no heartbeat, no lease renewal: readiness drops it, others reclaim its jobs
                silent = round(time.monotonic() - self.last_beat, 1)
                log.error("worker loop stalled; letting its jobs be reclaimed", extra={"silent_s": silent})
                continue
            now = time.time()
            with self.lock:
                held: list[Any] = list(self.entries.values())
            try:
                self.heart.zadd(self.keys.workers, {self.name: now})
                self.heart.zremrangebyscore(self.keys.workers, "-inf", now - 10 * self.settings.heartbeat_ttl_s)
                if held:  # renew the lease on every job this worker holds: it is alive, not idle
                    self.heart.xclaim(self.keys.jobs, GROUP, self.name, 0, held, justid=True)
            except ResponseError as error:
                if "NOGROUP" in str(error):
                    self.ensure_group()
            except TRANSIENT:
                pass

    def leave(self) -> None:
        self.stopped.set()
        with contextlib.suppress(*TRANSIENT):
            self.client.zrem(self.keys.workers, self.name)


def run_worker(settings: Settings, name: str | None = None, metrics_port: int | None = None) -> int:
    """``parafeed worker``: serve jobs until SIGTERM/SIGINT, then drain (finish or hand back) and exit."""
    from app.worker import Worker
    from samplers.engine import Engine

    if not settings.redis_url:
        raise ValueError("parafeed worker needs --redis-url (or PARAFEED_REDIS_URL)")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    engine = Engine(settings.device, settings.registry)
    engine.load_all()
    source = RedisWorkSource(settings, name)
    worker = Worker(engine, source, settings, name)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.metrics_host)

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal received: draining", extra={"signal": signum})
        source.draining.set()
        worker.stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        source.leave()
    return 0
