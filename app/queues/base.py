"""What the API needs from a queue. The worker side is ``app.worker.WorkSource``."""

from __future__ import annotations

from typing import Protocol

from app.jobs import Job, Result


class QueueFullError(RuntimeError):
    """Too many jobs waiting or running: the API answers 503 with Retry-After."""


class JobQueue(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job: Job) -> None:
        """Accept a job (raises QueueFullError). From here on its result will be delivered exactly once."""
        ...

    async def result(self, job: Job, timeout: float) -> Result | None:
        """The job's result, or None if ``timeout`` seconds pass first."""
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
