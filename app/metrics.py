"""Prometheus metrics of the API and the workers (one registry per process; /metrics serves it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("parafeed_requests_total", "HTTP requests answered", ["endpoint", "model", "status"])
LATENCY = Histogram(
    "parafeed_request_seconds", "Time from request to response", ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)  # fmt: skip
QUEUE_WAIT = Histogram(
    "parafeed_queue_wait_seconds", "Time a job waited before a worker started it", ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)  # fmt: skip
OCCUPANCY = Histogram(
    "parafeed_batch_occupancy", "Active rows / max rows, per solver iteration", ["model"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)  # fmt: skip
ITERATIONS = Histogram(
    "parafeed_iterations", "Evaluations a sample needed to converge", ["model", "method"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)  # fmt: skip
VERIFICATIONS = Counter(
    "parafeed_verifications_total",
    "Answered samples re-checked against the sequential method (continuous verification)",
    ["model", "outcome"],
)
JOBS = Counter("parafeed_jobs_total", "Jobs finished by workers", ["kind", "outcome"])
WORKERS = Gauge("parafeed_workers", "Workers alive (heartbeats within their TTL)")
QUEUE_DEPTH = Gauge("parafeed_queue_depth", "Jobs waiting or running")
