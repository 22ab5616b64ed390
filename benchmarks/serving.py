"""Serving benchmark: what HTTP, the queue and batching cost, and what iteration-level batching buys.

Measured in one run on one machine, against servers started here on free loopback ports:
1. throughput at the same batch size: the library solving batches of ``batch`` samples back to back (samples/s),
   against the embedded server solving the same batches (``max_batch_rows = batch``: one request per batch) under
   ``clients`` concurrent clients; and, beside it, the server with its default batch of many requests' rows. The
   three take turns for ``rounds`` rounds, so the drift of this shared machine hits all of them alike;
2. added latency: one client, one request at a time; p50 of (server latency - library latency for the same
   request), embedded and through Redis (server + one worker process), with a 95% bootstrap interval; the two
   sides alternate in blocks of ``latency_block`` requests;
3. batching: an open-loop Poisson stream of mixed requests at a fixed rate, served with iteration-level
   (continuous) batching and with batch-synchronous batching; latency is measured from each request's scheduled
   arrival (no coordinated omission), every response kept; p50 / p95 / p99 at the same offered load.

    python -m benchmarks.serving [--quick] [--out benchmarks/results] [--registry DIR --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.harness import RESULTS, environment, write_json
from benchmarks.processes import PARAFEED, LeanClient, Processes
from benchmarks.serving_plots import plot
from benchmarks.serving_workers import workers
from samplers.engine import Engine
from samplers.sampling import sample


@dataclass(frozen=True)
class ServingConfig:
    model: str = "made-fmnist"
    method: str = "jacobi"
    registry: str | None = None  # checkpoint directory; None: the shipped models
    batch: int = 16  # samples per request in the throughput test
    clients: int = 8
    rounds: int = 12  # throughput: library and servers take turns, so drift of this shared machine hits all alike
    round_s: float = 3.0  # seconds per side and round (the library alone varies by 10-15% from round to round)
    latency_requests: int = 400  # machine noise dominates single requests: enough pairs for a tight median
    latency_block: int = 10  # added latency: library and server alternate in blocks of this many requests
    rate_per_s: float = 30.0  # offered load of the batching comparison
    stream_s: float = 30.0
    worker_rounds: int = 4  # the workers comparison: rounds per layout, taking turns
    worker_clients: int = 4  # closed-loop clients of 4-sample requests
    seed: int = 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def library_round(cfg: ServingConfig, engine: Engine, seed: int) -> tuple[int, float]:
    """(samples, seconds): the library call on batches of ``cfg.batch``, back to back, for ``round_s``."""
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < cfg.round_s:
        sample(engine, cfg.model, cfg.batch, cfg.method, seed)
        done, seed = done + cfg.batch, seed + 1
    return done, time.perf_counter() - start


def server_round(cfg: ServingConfig, base: str, seed: int) -> tuple[int, float, int]:
    """(samples, seconds, errors): ``cfg.clients`` closed-loop clients sending batches for ``round_s``."""
    body = {"model": cfg.model, "num_samples": cfg.batch, "method": cfg.method}
    counter = {"samples": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = time.perf_counter() + cfg.round_s

    def client(index: int) -> None:
        http, k = LeanClient(base), 0
        while time.perf_counter() < stop_at:
            status, _ = http.post("/sample", {**body, "seed": seed + index * 100_000 + k})
            k += 1
            with lock:
                counter["samples" if status == 200 else "errors"] += cfg.batch if status == 200 else 1
        http.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(cfg.clients) as pool:
        list(pool.map(client, range(cfg.clients)))
    return counter["samples"], time.perf_counter() - start, counter["errors"]


def throughput(cfg: ServingConfig, engine: Engine, same: str, merged: str) -> dict[str, Any]:
    """Samples/s of the library, the server at the same batch size, and the server merging requests' rows."""
    sample(engine, cfg.model, cfg.batch, cfg.method, 0)  # warm-up
    for base in (same, merged):
        LeanClient(base).post("/sample", {"model": cfg.model, "num_samples": cfg.batch, "method": cfg.method})
    totals = {side: [0, 0.0, 0] for side in ("library", "same", "merged")}
    per_round: list[dict[str, float]] = []
    for r in range(cfg.rounds):
        seed = 1_000_000 * (r + 1)
        measured = {"library": (*library_round(cfg, engine, seed), 0), "same": server_round(cfg, same, seed),
                    "merged": server_round(cfg, merged, seed)}  # fmt: skip
        per_round.append({side: round(n / t, 2) for side, (n, t, _) in measured.items()})
        for side, (n, t, errors) in measured.items():
            totals[side] = [totals[side][0] + n, totals[side][1] + t, totals[side][2] + errors]
    rate = {side: n / t for side, (n, t, _) in totals.items()}
    return {
        "batch": cfg.batch, "clients": cfg.clients, "rounds": per_round,
        "library_samples_per_s": round(rate["library"], 2), "server_samples_per_s": round(rate["same"], 2),
        "ratio": round(rate["same"] / rate["library"], 3),
        "median_round_ratio": round(statistics.median(r["same"] / r["library"] for r in per_round), 3),
        "errors": totals["same"][2] + totals["merged"][2],
        "server_default_batching_samples_per_s": round(rate["merged"], 2),
        "default_batching_ratio": round(rate["merged"] / rate["library"], 3),
    }  # fmt: skip


def added_latency(cfg: ServingConfig, engine: Engine, base: str) -> dict[str, Any]:
    """Per request, server latency minus library latency for the same (n, seed), p50 over the requests.

    The two sides run in alternating blocks of ``latency_block`` requests with a pause between blocks: one
    side's idle OpenMP threads spin for a while after work and would slow the other side's next call if the two
    were interleaved request by request, and blocks keep both sides under the same drift of this shared machine.
    """
    requests = [(1 + k % 4, 10_000 + k) for k in range(cfg.latency_requests)]
    library_ms: list[float] = []
    server_ms: list[float] = []
    http = LeanClient(base)

    def on_server(n: int, seed: int) -> float:
        t = time.perf_counter()
        status, raw = http.post("/sample", {"model": cfg.model, "num_samples": n, "method": cfg.method, "seed": seed})
        elapsed = (time.perf_counter() - t) * 1000
        assert status == 200, raw[:500]
        return elapsed

    def on_library(n: int, seed: int) -> float:
        t = time.perf_counter()
        sample(engine, cfg.model, n, cfg.method, seed)
        return (time.perf_counter() - t) * 1000

    on_library(1, 0), on_server(1, 0)  # warm-up
    for start in range(0, len(requests), cfg.latency_block):
        chunk = requests[start : start + cfg.latency_block]
        for measure, into in ((on_library, library_ms), (on_server, server_ms)):
            time.sleep(0.2)
            into += [measure(n, seed) for n, seed in chunk]
    http.close()
    added = [srv - lib for srv, lib in zip(server_ms, library_ms, strict=True)]
    median = statistics.median
    low, high = median_interval(added, cfg.seed)
    return {"p50_added_ms": round(median(added), 3), "p50_added_ci95_ms": [round(low, 3), round(high, 3)],
            "p50_library_ms": round(median(library_ms), 3), "p50_server_ms": round(median(server_ms), 3),
            "p90_added_ms": round(percentile(added, 0.9) or 0, 3), "requests": cfg.latency_requests,
            "client": "http.client, one keep-alive connection"}  # fmt: skip


def median_interval(values: list[float], seed: int, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median: how far another run of the same benchmark may land."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def open_loop(cfg: ServingConfig, base: str) -> dict[str, Any]:
    """A Poisson stream at ``rate_per_s``; latency from each request's *scheduled* arrival to its answer."""
    rng = random.Random(cfg.seed)
    arrivals, t = [], 0.0
    while t < cfg.stream_s:
        t += rng.expovariate(cfg.rate_per_s)
        arrivals.append((t, rng.choice([1, 1, 2, 4, 8]), rng.randrange(2**31)))

    async def stream() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            start = time.perf_counter()

            async def fire(at: float, n: int, seed: int) -> None:
                nonlocal errors
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                body = {"model": cfg.model, "num_samples": n, "method": cfg.method, "seed": seed}
                try:
                    r = await http.post(f"{base}/sample", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - (start + at)) * 1000)
                else:
                    errors += 1

            await asyncio.gather(*(fire(*a) for a in arrivals))
            return latencies, errors, time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(stream())

    def rounded(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if value is None else round(value, 2)

    return {"requests": len(arrivals), "answered": len(latencies), "errors": errors,
            "throughput_rps": round(len(latencies) / elapsed, 2), "p50_ms": rounded(0.5), "p95_ms": rounded(0.95),
            "p99_ms": rounded(0.99), "latencies_ms": latencies}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--registry", help="checkpoint directory (default: the shipped models)")
    parser.add_argument("--model", default=ServingConfig.model)
    args = parser.parse_args(argv)
    cfg = ServingConfig(model=args.model, registry=args.registry)
    if args.quick:
        cfg = replace(cfg, rounds=2, round_s=3, latency_requests=20, stream_s=8, worker_rounds=1)
    torch.manual_seed(cfg.seed)
    engine = Engine("cpu", cfg.registry)
    registry = ["--registry", cfg.registry] if cfg.registry else []
    procs = Processes()
    results: dict[str, Any] = {}
    try:
        one_per_batch = {"PARAFEED_MAX_BATCH_ROWS": str(cfg.batch), "PARAFEED_MAX_SAMPLES": str(cfg.batch)}
        same = procs.server(*registry, env=one_per_batch)
        embedded = procs.server(*registry)
        results["throughput"] = throughput(cfg, engine, same, embedded)
        results["added_latency_embedded"] = added_latency(cfg, engine, embedded)
        procs.stop()
        url = procs.redis()
        if url:
            procs.start(*PARAFEED, "worker", "--redis-url", url, "--device", "cpu", "--name", "bench", *registry)
            base = procs.server("--redis-url", url, *registry)
            results["added_latency_redis"] = added_latency(cfg, engine, base)
            procs.stop()
        else:
            results["added_latency_redis"] = {"skipped": "redis-server not found"}
        results["workers"] = workers(cfg, registry)
        results["batching"] = {}
        for mode in ("iteration", "static"):
            base = procs.server("--batching", mode, *registry)
            results["batching"][mode] = open_loop(cfg, base)
            procs.stop()
    finally:
        procs.stop()
    env = environment("cpu")
    payload = {"benchmark": "serving", "config": asdict(cfg), "environment": env, **results}
    name = f"serving{'-quick' if args.quick else ''}-cpu"
    path = write_json(name, payload, args.out)
    plot(payload, path.with_suffix(".png"))
    summary = {k: v for k, v in results.items() if k != "batching"}
    summary["batching"] = {
        m: {k: v for k, v in r.items() if k != "latencies_ms"} for m, r in results["batching"].items()
    }
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
