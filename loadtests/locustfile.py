"""Load test of a parafeed server: a realistic mix of /sample, /gradient and /infer, with thresholds.

Headless and bounded (see locust.conf and ``python -m loadtests.run``). The run fails (exit code 1) when the
failure ratio or the p95 / p99 latency exceeds its threshold. Model names and thresholds come from the
environment so the same file drives the shipped models and the tiny models of the test suite:

    PARAFEED_LOAD_SAMPLER, PARAFEED_LOAD_SEQUENCE, PARAFEED_LOAD_CLASSIFIER   model names
    PARAFEED_LOAD_MAX_FAIL_RATIO (0.01), PARAFEED_LOAD_P95_MS (2000), PARAFEED_LOAD_P99_MS (5000)
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, events, task
from locust.env import Environment

SAMPLER = os.environ.get("PARAFEED_LOAD_SAMPLER", "made-fmnist")
SEQUENCE = os.environ.get("PARAFEED_LOAD_SEQUENCE", "rnn-fmnist")
CLASSIFIER = os.environ.get("PARAFEED_LOAD_CLASSIFIER", "densenet-fmnist")
MAX_FAIL_RATIO = float(os.environ.get("PARAFEED_LOAD_MAX_FAIL_RATIO", "0.01"))
P95_MS = float(os.environ.get("PARAFEED_LOAD_P95_MS", "2000"))
P99_MS = float(os.environ.get("PARAFEED_LOAD_P99_MS", "5000"))


class ParafeedUser(HttpUser):
    """A client of the API: mostly sampling (the product), some gradients and inference."""

    wait_time = between(0.05, 0.2)

    @task(6)
    def sample(self) -> None:
        body = {"model": SAMPLER, "num_samples": random.choice([1, 4, 8]), "method": "auto",
                "seed": random.randrange(2**31)}  # fmt: skip
        with self.client.post("/sample", json=body, name="/sample", catch_response=True) as r:
            if r.status_code != 200 or not r.json().get("converged"):
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(2)
    def gradient(self) -> None:
        body = {"model": SEQUENCE, "batch": 2, "method": "auto", "seed": random.randrange(1000)}
        with self.client.post("/gradient", json=body, name="/gradient", catch_response=True) as r:
            if r.status_code != 200 or not r.json().get("exact"):
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(2)
    def infer(self) -> None:
        body = {"model": CLASSIFIER, "batch": 2, "method": "auto", "seed": random.randrange(1000)}
        with self.client.post("/infer", json=body, name="/infer", catch_response=True) as r:
            if r.status_code != 200 or not r.json().get("exact"):
                r.failure(f"{r.status_code}: {r.text[:200]}")


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def enforce_thresholds(environment: Environment, **_: object) -> None:
    total = environment.stats.total
    problems = []
    if total.fail_ratio > MAX_FAIL_RATIO:
        problems.append(f"failure ratio {total.fail_ratio:.3f} > {MAX_FAIL_RATIO}")
    if total.num_requests and total.get_response_time_percentile(0.95) > P95_MS:
        problems.append(f"p95 {total.get_response_time_percentile(0.95):.0f} ms > {P95_MS:.0f} ms")
    if total.num_requests and total.get_response_time_percentile(0.99) > P99_MS:
        problems.append(f"p99 {total.get_response_time_percentile(0.99):.0f} ms > {P99_MS:.0f} ms")
    if total.num_requests == 0:
        problems.append("no requests were made")
    if problems:
        print("THRESHOLDS FAILED: " + "; ".join(problems))
        environment.process_exit_code = 1
    else:
        p95, p99 = total.get_response_time_percentile(0.95), total.get_response_time_percentile(0.99)
        print(
            f"thresholds met: {total.num_requests} requests, fail ratio {total.fail_ratio:.3f}, "
            f"p95 {p95:.0f} ms, p99 {p99:.0f} ms"
        )
