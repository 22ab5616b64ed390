"""The in-process queue of the embedded server: an asyncio API on one side, a worker thread on the other.

Jobs wait in a FIFO deque; the worker thread takes at most as many as it has free rows. Results resolve an
asyncio future registered at submit time, so a result can never arrive before somebody waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque

from app.jobs import Job, Result
from app.queues.base import QueueFullError


class LocalQueue:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._futures: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Result]]] = {}
        self._outstanding: set[str] = set()
        self._cancelled: set[str] = set()  # abandoned by their callers, not yet answered
        self.worker_thread: threading.Thread | None = None  # set by the app: readiness means it is alive

    # -- API side -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        with self._ready:
            self._ready.notify_all()

    async def submit(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        with self._ready:
            if len(self._outstanding) >= self.max_queue:
                raise QueueFullError(f"{len(self._outstanding)} jobs in flight (limit {self.max_queue})")
            self._futures[job.id] = (loop, loop.create_future())
            self._outstanding.add(job.id)
            self._jobs.append(job)
            self._ready.notify()

    async def result(self, job: Job, timeout: float) -> Result | None:
        _, future = self._futures[job.id]
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(timeout, 0.0))
        except TimeoutError:
            return None
        finally:  # answered or abandoned: a late result finds nobody waiting and is dropped
            with self._ready:
                self._futures.pop(job.id, None)

    async def cancel(self, job: Job) -> None:
        with self._ready:
            if job.id in self._outstanding:
                self._cancelled.add(job.id)

    async def depth(self) -> int:
        return len(self._outstanding)

    async def workers(self) -> int:
        return int(self.worker_thread is not None and self.worker_thread.is_alive())

    async def ping(self) -> bool:
        return True

    # -- worker side ----------------------------------------------------------------------------------------
    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]:
        with self._ready:
            if not self._jobs and timeout_s > 0:
                self._ready.wait(timeout_s)
            taken: list[Job] = []
            while self._jobs and len(taken) < max_jobs:
                taken.append(self._jobs.popleft())
            return taken

    def complete(self, job: Job, result: Result) -> None:
        with self._ready:
            self._outstanding.discard(job.id)
            self._cancelled.discard(job.id)
            entry = self._futures.get(job.id)
        if entry is None:  # the caller gave up (deadline); nobody to tell
            return
        loop, future = entry

        def resolve() -> None:
            if not future.done():
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the event loop is closed (shutting down): nobody left to tell
            loop.call_soon_threadsafe(resolve)

    def release(self, job: Job) -> None:
        with self._ready:
            self._jobs.appendleft(job)

    def beat(self) -> None:
        pass  # the worker shares this process: readiness checks its thread directly

    def cancelled(self, job_ids: set[str]) -> set[str]:
        return job_ids & self._cancelled  # a racy read is fine: a cancellation is noticed at the next look

    def ready(self, wanted: int) -> bool:
        return wanted > 0 and bool(self._jobs)  # a racy read is fine for a hint: fetch takes the lock
