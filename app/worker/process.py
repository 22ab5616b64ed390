"""``parafeed worker``: one process serving jobs from Redis Streams until SIGTERM/SIGINT, then draining."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

import torch

from app.queues.redis_worker import RedisWorkSource
from app.settings import Settings
from app.worker.loop import Worker

log = logging.getLogger("parafeed.worker")


def run_worker(settings: Settings, name: str | None = None, metrics_port: int | None = None) -> int:
    """Load every model, then serve jobs until a signal; drain (finish or hand back) and exit 0."""
    if not settings.redis_url:
        raise ValueError("parafeed worker needs --redis-url (or PARAFEED_REDIS_URL)")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    torch.set_num_threads(settings.torch_threads)
    engine = settings.engine()
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

    log.info("worker starting", extra={"worker": name, "threads": settings.torch_threads})
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        source.leave()
    return 0
