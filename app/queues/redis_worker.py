"""The worker side of Redis Streams: where a ``parafeed worker`` gets its jobs and puts its results.

Four threads share one ``RedisWorkSource``:
- the solver loop (the worker, ``app.worker``) calls ``fetch`` / ``ready`` / ``complete`` / ``release``;
- a reader blocks on the stream (XREADGROUP BLOCK) on its own connection, so a new job is picked up the moment
  it arrives while the solver iterates, and the solver never waits for a round trip to ask. It reads one job at
  a time and only while the solver has room (``fetch`` and ``ready`` tell it how many jobs it may take): a
  worker holds at most one job it has not admitted yet. It also reclaims jobs of silent workers (XAUTOCLAIM);
- a heartbeat announces the worker and renews the lease of every job it holds, fetched or buffered, as long as
  the solver loop keeps beating; a watcher learns which callers went away (``app.queues.redis_liveness``).

The guarantees (at-least-once execution, exactly-once replies, dead letters, restarts) are those of
``app.queues.redis_streams``, whose keys and scripts this module uses.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

import redis
from redis.exceptions import ResponseError

from app.jobs import Job, Result
from app.queues.redis_liveness import Liveness
from app.queues.redis_streams import DELIVER, GROUP, TRANSIENT, Keys, connection_options
from app.settings import Settings

log = logging.getLogger("parafeed.redis")


class RedisWorkSource:
    def __init__(self, settings: Settings, name: str) -> None:
        assert settings.redis_url
        self.settings, self.name, self.keys = settings, name, Keys(settings.stream_prefix)
        self.client = redis.from_url(settings.redis_url, **connection_options())
        self.deliver = self.client.register_script(DELIVER)
        self.entries: dict[str, str] = {}  # job id -> entry id of jobs this worker holds (guarded by lock)
        self.lock = threading.Lock()
        self.last_claim = 0.0
        self.claim_cursor = "0-0"  # XAUTOCLAIM scans a window per call: resume where the last call stopped
        self.ensure_group()
        self.stopped = threading.Event()
        self.draining = threading.Event()  # set on SIGTERM: no new jobs; undeliverable results left for a reclaim
        # The reader: jobs it read wait in the inbox until the solver takes them; ``room`` is how many more jobs
        # the solver said it would take. Both guarded by ``wake``.
        self.inbox: deque[Job] = deque()
        self.room = 0
        self.wake = threading.Condition()
        block_s = settings.read_block_ms / 1000
        self.reader = redis.from_url(settings.redis_url, socket_timeout=block_s + 5, decode_responses=True)
        self.read_backoff = 0.05
        self.reading = threading.Thread(target=self._read_loop, name=f"reader-{name}", daemon=True)
        self.reading.start()
        self.liveness = Liveness(self)  # heartbeats, leases, and callers that went away: threads of their own

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except TRANSIENT:
            pass

    @staticmethod
    def _pause(error: Exception, backoff: float) -> float:
        """Sleep ``backoff`` seconds after a Redis error; returns the next backoff (each thread keeps its own)."""
        log.warning("redis unavailable, backing off", extra={"error": str(error), "sleep_s": backoff})
        time.sleep(backoff)
        return min(backoff * 2, 2.0)

    # -- the solver loop's side -----------------------------------------------------------------------------
    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]:
        """Up to ``max_jobs`` jobs the reader has read, waiting up to ``timeout_s`` for one; the solver has room
        for ``max_jobs`` (0: none, the reader stops reading)."""
        with self.wake:
            self._set_room(max_jobs)
            if max_jobs > 0 and not self.inbox and timeout_s > 0:
                self.wake.wait_for(lambda: bool(self.inbox) or self.stopped.is_set(), timeout_s)
            taken = [self.inbox.popleft() for _ in range(min(max_jobs, len(self.inbox)))]
            self._set_room(max_jobs - len(taken))
        if max_jobs <= 0 and timeout_s > 0:
            time.sleep(min(timeout_s, 0.05))
        return taken

    def ready(self, wanted: int) -> bool:
        """The solver has room for ``wanted`` more jobs; True if it has and one is waiting in the inbox (no I/O)."""
        with self.wake:
            self._set_room(wanted)
            return wanted > 0 and bool(self.inbox)

    def _set_room(self, room: int) -> None:
        if room > 0 and self.room <= 0:
            self.wake.notify_all()  # the reader may read again
        self.room = room

    # -- the reader -----------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self.stopped.is_set():
            if self.draining.is_set():  # shutting down: read nothing more, hand back what the solver never took
                self._hand_back_inbox()
                self.stopped.wait(self.settings.read_block_ms / 1000)
                continue
            with self.wake:
                if self.room <= 0 or self.inbox:  # no room, or a job already waits: read nothing ahead
                    self.wake.wait(self.settings.read_block_ms / 1000)
                    continue
                room = self.room
            try:
                jobs = self._read(room)
            except Exception:  # never let the reader die: the worker would starve while looking alive
                log.exception("reading jobs failed")
                time.sleep(0.1)
                continue
            with self.wake:
                late = self.stopped.is_set() or self.draining.is_set()  # nobody will take these: hand them back
                if not late:
                    self.inbox.extend(jobs)
                    self.room -= len(jobs)
                    self.wake.notify_all()
            for job in jobs if late else []:
                self.release(job)

    def _hand_back_inbox(self) -> None:
        with self.wake:
            unclaimed = list(self.inbox)
            self.inbox.clear()
        for job in unclaimed:
            self.release(job)

    def _read(self, room: int) -> list[Job]:
        """Reclaimed jobs, in bulk (every job a dead worker held, up to ``max_batch_rows``: each needs a row), else
        one new job (or none after ``read_block_ms``); recorded as held, their leases renewed from now on."""
        jobs: list[tuple[str, Job]] = []  # recorded as held only when returned, even if a later call fails
        try:
            jobs += self._reclaim(max(room, self.settings.max_batch_rows))
            if not jobs:
                streams: dict[Any, Any] = {self.keys.jobs: ">"}
                block = self.settings.read_block_ms
                reply: Any = self.reader.xreadgroup(GROUP, self.name, streams, count=1, block=block)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        job = self._job(entry_id, fields)
                        if job is not None:
                            jobs.append((entry_id, job))
            self.read_backoff = 0.05
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self.ensure_group()  # Redis restarted without the group: make it again
        except TRANSIENT as error:
            self.read_backoff = self._pause(error, self.read_backoff)
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

    # -- results and hand-backs -----------------------------------------------------------------------------
    def complete(self, job: Job, result: Result) -> None:
        """Write the result (once), then acknowledge: retried until Redis takes it."""
        with self.lock:
            entry = self.entries.pop(job.id, None)
        self._deliver(job, entry, result)

    def _deliver(self, job: Job, entry: str | None, result: Result) -> None:
        """Retried until Redis takes it; while draining, at most ``drain_attempts`` tries: an unacknowledged job is
        reclaimed and re-run by another worker (same seed, same answer), so giving up loses nothing."""
        attempts, backoff = 0, 0.05
        while True:
            try:
                keys = [self.keys.done(job.id), self.keys.result(job.id), self.keys.jobs]
                self.deliver(keys=keys, args=[result.to_json(), self.settings.result_ttl_s, GROUP, entry or "0-0"])
                return
            except TRANSIENT as error:
                backoff = self._pause(error, backoff)
            except ResponseError as error:  # e.g. OOM or READONLY: keep the result, try again shortly
                log.error("redis refused a result; retrying", extra={"job": job.id, "error": str(error)})
                backoff = self._pause(error, backoff)
            attempts += 1
            if self.draining.is_set() and attempts >= self.settings.drain_attempts:
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

    # -- liveness -------------------------------------------------------------------------------------------
    def beat(self) -> None:
        """The worker loop made progress: the heartbeat may keep announcing it and renewing its leases."""
        self.liveness.beat()

    def cancelled(self, job_ids: set[str]) -> set[str]:
        return job_ids & self.liveness.gone

    def leave(self) -> None:
        """Stop reading and beating; hand back what the reader read and the solver never took."""
        self.stopped.set()
        with self.wake:
            self.room = 0
            self.wake.notify_all()
        self.reading.join(self.settings.read_block_ms / 1000 + 1)  # a read in flight ends, and its job is handed back
        self._hand_back_inbox()
        with contextlib.suppress(*TRANSIENT):
            self.client.zrem(self.keys.workers, self.name)
