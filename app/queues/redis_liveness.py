"""A Redis worker's liveness: heartbeats that renew its leases, and the callers that went away.

Both run on threads and connections of their own, beside the worker's reader (``app.queues.redis_worker``):
- the heartbeat announces the worker (``P:workers``) and renews the lease of every job it holds (XCLAIM JUSTID:
  their idle time restarts, no delivery is counted), but only while the solver loop keeps beating: a loop
  silent for ``worker_stall_s`` stops being vouched for, and its jobs are reclaimed by others;
- the watcher polls, every ``cancel_poll_ms``, the cancel keys of the jobs the worker holds (``P:cancel:<id>``,
  set by an API process whose caller hung up), so the loop learns it between two steps without any I/O.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ResponseError

from app.queues.redis_streams import GROUP, TRANSIENT, connection_options

if TYPE_CHECKING:
    from app.queues.redis_worker import RedisWorkSource

log = logging.getLogger("parafeed.redis")


class Liveness:
    def __init__(self, source: RedisWorkSource) -> None:
        self.source = source
        url = source.settings.redis_url
        assert url
        self.heart = redis.from_url(url, **connection_options())
        self.watcher = redis.from_url(url, **connection_options())
        self.last_beat = time.monotonic()
        self.gone: frozenset[str] = frozenset()  # held jobs whose callers went away
        threading.Thread(target=self._heartbeat, name=f"heartbeat-{source.name}", daemon=True).start()
        threading.Thread(target=self._watch_cancellations, name=f"cancellations-{source.name}", daemon=True).start()

    def beat(self) -> None:
        """The worker loop made progress: the heartbeat thread may keep announcing it and renewing its leases."""
        self.last_beat = time.monotonic()

    def stalled(self) -> bool:
        """The loop has not beaten for ``worker_stall_s``: it hangs, so stop vouching for it."""
        return time.monotonic() - self.last_beat > self.source.settings.worker_stall_s

    def _heartbeat(self) -> None:
        source, settings, keys = self.source, self.source.settings, self.source.keys
        while not source.stopped.wait(settings.heartbeat_s):
            if self.stalled():  # no heartbeat, no lease renewal: readiness drops it, others reclaim its jobs
                silent = round(time.monotonic() - self.last_beat, 1)
                log.error("worker loop stalled; letting its jobs be reclaimed", extra={"silent_s": silent})
                continue
            now = time.time()
            with source.lock:
                held: list[Any] = list(source.entries.values())
            try:
                self.heart.zadd(keys.workers, {source.name: now})
                self.heart.zremrangebyscore(keys.workers, "-inf", now - 10 * settings.heartbeat_ttl_s)
                if held:  # renew the lease on every job this worker holds: it is alive, not idle
                    self.heart.xclaim(keys.jobs, GROUP, source.name, 0, held, justid=True)
            except ResponseError as error:
                if "NOGROUP" in str(error):
                    source.ensure_group()
            except TRANSIENT:
                pass

    def _watch_cancellations(self) -> None:
        source = self.source
        while not source.stopped.wait(source.settings.cancel_poll_ms / 1000):
            with source.lock:
                held = list(source.entries)
            if not held:
                self.gone = frozenset()
                continue
            try:
                flags: Any = self.watcher.mget([source.keys.cancel(job_id) for job_id in held])
            except TRANSIENT:
                continue
            self.gone = frozenset(job_id for job_id, flag in zip(held, flags, strict=True) if flag)
