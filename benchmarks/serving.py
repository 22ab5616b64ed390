"""Serving benchmark: what HTTP, the queue and batching cost, and what iteration-level batching buys.

Measured in one run on one machine, against servers started here on free loopback ports:
1. throughput at the same batch size: the library solving batches of ``batch`` samples back to back (samples/s),
   against the embedded server solving the same batches (``max_batch_rows = batch``: one request per batch) under
   ``clients`` concurrent clients; and, beside it, the server with its default batch of many requests' rows;
2. added latency: one client, one request at a time; p50 of (server latency - library latency for the same
   request), embedded and through Redis (server + one worker process);
3. batching: an open-loop Poisson stream of mixed requests at a fixed rate, served with iteration-level
   (continuous) batching and with batch-synchronous batching; latency is measured from each request's scheduled
   arrival (no coordinated omission), every response kept; p50 / p95 / p99 at the same offered load.

    python -m benchmarks.serving [--quick] [--out benchmarks/results] [--registry DIR --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.harness import RESULTS, environment, write_json
from samplers.engine import Engine
from samplers.sampling import sample

ROOT = Path(__file__).resolve().parent.parent
PARAFEED = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class ServingConfig:
    model: str = "made-fmnist"
    method: str = "jacobi"
    registry: str | None = None  # checkpoint directory; None: the shipped models
    batch: int = 16  # samples per request in the throughput test
    clients: int = 8
    duration_s: float = 20.0
    latency_requests: int = 200
    rate_per_s: float = 30.0  # offered load of the batching comparison
    stream_s: float = 30.0
    seed: int = 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Servers, workers and Redis started for the benchmark, stopped at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        process = subprocess.Popen([*args], cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started.append(process)
        return process

    def server(self, *extra: str, env: dict[str, str] | None = None) -> str:
        port = free_port()
        self.start(*PARAFEED, "serve", "--port", str(port), "--device", "cpu", *extra, env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        for process in reversed(self.started):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def library_throughput(cfg: ServingConfig, engine: Engine) -> float:
    """Samples per second of the library call on batches of ``cfg.batch``, back to back."""
    sample(engine, cfg.model, cfg.batch, cfg.method, 0)  # warm-up
    start, done, seed = time.perf_counter(), 0, 0
    while time.perf_counter() - start < cfg.duration_s / 2:
        sample(engine, cfg.model, cfg.batch, cfg.method, seed)
        done, seed = done + cfg.batch, seed + 1
    return done / (time.perf_counter() - start)


def server_throughput(cfg: ServingConfig, base: str) -> dict[str, Any]:
    """Samples per second the server answers under ``cfg.clients`` closed-loop clients sending batches."""
    body = {"model": cfg.model, "num_samples": cfg.batch, "method": cfg.method}
    counter = {"samples": 0, "errors": 0}
    lock = threading.Lock()
    httpx.post(f"{base}/sample", json=body, timeout=120)  # warm-up
    stop_at = time.perf_counter() + cfg.duration_s

    def client(index: int) -> None:
        with httpx.Client(timeout=120) as http:
            k = 0
            while time.perf_counter() < stop_at:
                r = http.post(f"{base}/sample", json={**body, "seed": index * 100_000 + k})
                k += 1
                with lock:
                    counter["samples" if r.status_code == 200 else "errors"] += cfg.batch if r.status_code == 200 else 1

    start = time.perf_counter()
    with ThreadPoolExecutor(cfg.clients) as pool:
        list(pool.map(client, range(cfg.clients)))
    return {"samples_per_s": round(counter["samples"] / (time.perf_counter() - start), 2), "errors": counter["errors"]}


def added_latency(cfg: ServingConfig, engine: Engine, base: str) -> dict[str, Any]:
    """Per request, server latency minus library latency for the same (n, seed), p50 over the requests.

    The two sides run in alternating blocks of ``block`` requests with a pause between blocks: one side's idle
    OpenMP threads spin for a while after work and would slow the other side's next call if the two were
    interleaved request by request, and blocks keep both sides under the same drift of this shared machine.
    """
    requests = [(1 + k % 4, 10_000 + k) for k in range(cfg.latency_requests)]
    block = 10
    library_ms: list[float] = []
    server_ms: list[float] = []
    with httpx.Client(timeout=120) as http:

        def on_server(n: int, seed: int) -> float:
            t = time.perf_counter()
            r = http.post(f"{base}/sample", json={"model": cfg.model, "num_samples": n, "method": cfg.method,
                                                 "seed": seed})  # fmt: skip
            elapsed = (time.perf_counter() - t) * 1000
            assert r.status_code == 200, r.text
            return elapsed

        def on_library(n: int, seed: int) -> float:
            t = time.perf_counter()
            sample(engine, cfg.model, n, cfg.method, seed)
            return (time.perf_counter() - t) * 1000

        on_library(1, 0), on_server(1, 0)  # warm-up
        for start in range(0, len(requests), block):
            chunk = requests[start : start + block]
            for measure, into in ((on_library, library_ms), (on_server, server_ms)):
                time.sleep(0.2)
                into += [measure(n, seed) for n, seed in chunk]
    added = [srv - lib for srv, lib in zip(server_ms, library_ms, strict=True)]
    median = statistics.median
    return {"p50_added_ms": round(median(added), 3), "p50_library_ms": round(median(library_ms), 3),
            "p50_server_ms": round(median(server_ms), 3), "requests": cfg.latency_requests}  # fmt: skip


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


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for mode, color in (("iteration", "tab:blue"), ("static", "tab:orange")):
        lat = sorted(payload["batching"][mode]["latencies_ms"])
        if lat:
            axes[0].plot(lat, [i / len(lat) for i in range(len(lat))], color=color, label=f"{mode} batching")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("latency (ms)")
    axes[0].set_ylabel("fraction of requests")
    axes[0].set_title(f"Same offered load ({payload['config']['rate_per_s']} req/s): latency CDF")
    axes[0].legend()
    modes = ["iteration", "static"]
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        axes[1].bar([j + (i - 1) * 0.25 for j in range(2)], [payload["batching"][m][q] for m in modes], 0.25, label=q)
    axes[1].set_xticks(range(2), [f"{m} batching" for m in modes])
    axes[1].set_ylabel("ms")
    axes[1].legend()
    axes[1].set_title("Iteration-level batching: nobody waits for someone else's slow sample")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--registry", help="checkpoint directory (default: the shipped models)")
    parser.add_argument("--model", default=ServingConfig.model)
    args = parser.parse_args(argv)
    cfg = ServingConfig(model=args.model, registry=args.registry)
    if args.quick:
        cfg = replace(cfg, duration_s=6, latency_requests=20, stream_s=8)
    torch.manual_seed(cfg.seed)
    engine = Engine("cpu", cfg.registry)
    registry = ["--registry", cfg.registry] if cfg.registry else []
    procs = Processes()
    results: dict[str, Any] = {}
    try:
        library = library_throughput(cfg, engine)
        same = procs.server(*registry, env={"PARAFEED_MAX_BATCH_ROWS": str(cfg.batch),
                                             "PARAFEED_MAX_SAMPLES": str(cfg.batch)})  # fmt: skip
        served = server_throughput(cfg, same)
        procs.stop()
        procs = Processes()
        embedded = procs.server(*registry)
        merged = server_throughput(cfg, embedded)
        results["throughput"] = {
            "batch": cfg.batch, "clients": cfg.clients, "library_samples_per_s": round(library, 2),
            "server_samples_per_s": served["samples_per_s"], "ratio": round(served["samples_per_s"] / library, 3),
            "errors": served["errors"], "server_default_batching_samples_per_s": merged["samples_per_s"],
            "default_batching_ratio": round(merged["samples_per_s"] / library, 3),
        }  # fmt: skip
        results["added_latency_embedded"] = added_latency(cfg, engine, embedded)
        procs.stop()
        procs = Processes()
        redis_binary = shutil.which("redis-server")
        if redis_binary:
            port = free_port()
            procs.start(redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
            url = f"redis://127.0.0.1:{port}/0"
            time.sleep(0.5)
            procs.start(*PARAFEED, "worker", "--redis-url", url, "--device", "cpu", "--name", "bench", *registry)
            base = procs.server("--redis-url", url, *registry)
            results["added_latency_redis"] = added_latency(cfg, engine, base)
            procs.stop()
            procs = Processes()
        else:
            results["added_latency_redis"] = {"skipped": "redis-server not found"}
        results["batching"] = {}
        for mode in ("iteration", "static"):
            base = procs.server("--batching", mode, *registry)
            results["batching"][mode] = open_loop(cfg, base)
            procs.stop()
            procs = Processes()
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
