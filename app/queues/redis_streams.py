"""Redis Streams between API replicas and ``parafeed worker`` processes on any number of hosts.

Keys (prefix ``P``): ``P:jobs`` (stream, consumer group ``workers``), ``P:result:<id>`` (a list holding the one
answer), ``P:done:<id>`` (the answer was delivered), ``P:cancel:<id>`` (the caller went away), ``P:dead``
(dead-letter stream), ``P:workers`` (sorted set of heartbeats).

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
Payloads are JSON. This module holds the keys, the scripts and the API side; ``app.queues.redis_worker`` the
worker side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.jobs import Job, Result
from app.queues.base import QueueFullError, QueueUnavailableError
from app.settings import Settings

log = logging.getLogger("parafeed.redis")
GROUP = "workers"
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


# KEYS: stream   ARGV: max entries, job json. The bound check and the add in one step: one round trip, no race.
SUBMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""


class Keys:
    def __init__(self, prefix: str) -> None:
        self.jobs, self.dead, self.workers = f"{prefix}:jobs", f"{prefix}:dead", f"{prefix}:workers"
        self.prefix = prefix

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"


def connection_options(asyncio_client: bool = False) -> dict[str, Any]:
    """What every client of ours connects with: a broken connection (a Redis restart) is retried on a fresh one,
    with backoff, instead of failing the command that found it broken. The asyncio client needs asyncio's Retry
    (given the other one, it awaits a coroutine the retry loop never saw, and retries nothing)."""
    kind = AsyncRetry if asyncio_client else Retry
    retry = kind(ExponentialBackoff(cap=2.0, base=0.05), retries=5, supported_errors=TRANSIENT)  # type: ignore[arg-type]
    return {"retry": retry, "retry_on_error": [RedisConnectionError, RedisTimeoutError], "socket_timeout": 5,
            "decode_responses": True}  # fmt: skip


# -- API side -------------------------------------------------------------------------------------------------
class RedisQueue:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self.settings, self.keys = settings, Keys(settings.stream_prefix)
        self.client = aredis.from_url(settings.redis_url, health_check_interval=10, **connection_options(True))
        self.entries: dict[str, str] = {}  # job id -> stream entry id, for jobs this process waits for
        # Redis's run_id changes when the server restarts: a job submitted under another run_id may be forgotten
        # (no persistence), even if the client reconnected transparently and never saw an error.
        self.run_ids: dict[str, str | None] = {}  # job id -> run_id when last known to be in Redis
        self._run_id: str | None = None
        self._run_id_at = -1.0
        self.add_job = self.client.register_script(SUBMIT)
        self.cleanups: set[asyncio.Task[Any]] = set()  # result keys being deleted after their answer went out
        self.seen_workers = (0.0, 0)  # (when, how many) workers were last seen alive

    async def start(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except TRANSIENT:
            log.warning("redis unreachable at start; will retry on use")

    async def stop(self) -> None:
        if self.cleanups:
            await asyncio.wait(self.cleanups, timeout=2.0)
        await self.client.aclose()

    async def submit(self, job: Job) -> None:
        try:
            run_id = await self.server_run_id()
            entry = await self.add_job(keys=[self.keys.jobs], args=[self.settings.max_queue, job.to_json()])
        except (AuthenticationError, AuthorizationError) as error:
            log.error("redis refused our credentials", extra={"error": str(error)})
            raise QueueUnavailableError("queue unavailable: Redis refused the server's credentials") from None
        except ResponseError as error:
            if not str(error).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise
            log.error("redis refused our credentials", extra={"error": str(error)})
            raise QueueUnavailableError("queue unavailable: Redis refused the server's credentials") from None
        except TRANSIENT as error:
            log.warning("redis unreachable", extra={"error": str(error)})
            raise QueueUnavailableError("queue unavailable: Redis cannot be reached, retry later") from None
        if entry is None:
            raise QueueFullError(f"{self.settings.max_queue} jobs waiting or running")
        self.entries[job.id] = str(entry)
        self.run_ids[job.id] = run_id

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
                        self._forget(key)
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

    def _forget(self, key: str) -> None:
        """Delete a delivered result in the background: the answer need not wait for it, and a failed delete
        only leaves the key until its TTL (nobody else waits for this job id)."""

        async def delete() -> None:
            with contextlib.suppress(*TRANSIENT):
                await self.client.delete(key)

        task = asyncio.create_task(delete())
        self.cleanups.add(task)
        task.add_done_callback(self.cleanups.discard)

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

    async def cancel(self, job: Job) -> None:
        """Tell whichever worker holds the job that its caller went away (it looks every ``cancel_poll_ms``)."""
        with contextlib.suppress(*TRANSIENT):
            await self.client.set(self.keys.cancel(job.id), "1", ex=self.settings.result_ttl_s)

    async def depth(self) -> int:
        return int(await self.client.xlen(self.keys.jobs))

    async def workers(self) -> int:
        """Workers with a heartbeat within ``heartbeat_ttl_s``. A Redis that restarted has forgotten them until
        their next beat: the ones seen before count until their TTL would have run out, so readiness does not flap."""
        now = time.time()
        count = int(await self.client.zcount(self.keys.workers, now - self.settings.heartbeat_ttl_s, "+inf"))
        if count:
            self.seen_workers = (now, count)
        elif now - self.seen_workers[0] < self.settings.heartbeat_ttl_s:
            return self.seen_workers[1]
        return count

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except TRANSIENT:
            return False
