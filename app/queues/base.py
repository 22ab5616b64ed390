"""What the API needs from a queue (``JobQueue``), and what a worker needs from one (``WorkSource``)."""

from __future__ import annotations

from typing import Protocol

from app.jobs import Job, Result


class QueueFullError(RuntimeError):
    """Too many jobs waiting or running: the API answers 503 with Retry-After."""


class QueueUnavailableError(RuntimeError):
    """The queue cannot take jobs now (Redis unreachable, or it refused our credentials): 503 saying which."""


class JobQueue(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job: Job) -> None:
        """Accept a job (raises QueueFullError). From here on its result will be delivered exactly once."""
        ...

    async def result(self, job: Job, timeout: float) -> Result | None:
        """The job's result, or None if ``timeout`` seconds pass first."""
        ...

    async def cancel(self, job: Job) -> None:
        """The caller went away: a worker holding the job stops it (best effort; its deadline stops it anyway)."""
        ...

    async def depth(self) -> int:
        """Jobs accepted and not yet answered."""
        ...

    async def workers(self) -> int:
        """Workers alive right now."""
        ...

    async def ping(self) -> bool:
        """Is the queue reachable?"""
        ...


class WorkSource(Protocol):
    """The worker's side of a queue: where a worker gets jobs and puts results (in-process or Redis Streams)."""

    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]:
        """Up to ``max_jobs`` jobs, waiting up to ``timeout_s`` for the first (0: the worker has no room)."""
        ...

    def complete(self, job: Job, result: Result) -> None:
        """Deliver the job's one result."""
        ...

    def release(self, job: Job) -> None:
        """Give a job back unanswered (shutdown): another worker will run it."""
        ...

    def beat(self) -> None:
        """The loop is alive and making progress (called once per turn)."""
        ...

    def cancelled(self, job_ids: set[str]) -> set[str]:
        """Which of these jobs their callers abandoned. Asked between steps, so cheap and without I/O."""
        ...

    def ready(self, wanted: int) -> bool:
        """Would ``fetch`` return a job at once? Asked between solver iterations, so cheap and without I/O;
        ``wanted``: how many jobs the worker has room for now (0: none, do not read ahead)."""
        ...
