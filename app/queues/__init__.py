"""Job queues between the API and the workers: in-process (embedded default) and Redis Streams (scaled)."""

from app.queues.base import JobQueue, QueueFullError, QueueUnavailableError, WorkSource

__all__ = ["JobQueue", "QueueFullError", "QueueUnavailableError", "WorkSource"]
