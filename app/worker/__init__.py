"""The worker: admission (``scheduler``), who owns rows (``owners``), answers (``replies``), the loop (``loop``),
and the ``parafeed worker`` process (``process``)."""

from app.worker.loop import Worker

__all__ = ["Worker"]
