"""Serving benchmark, part: one Redis worker process against two on the same machine, threads set by default.

Each worker process runs torch with ``threads`` threads; by default the cores this process may use over
``workers_per_host`` (``app/settings.py``). Two workers that each take every core (the old default) oversubscribe
the machine: more OpenMP threads than cores, and every solve slows down.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from benchmarks.processes import PARAFEED, LeanClient, Processes

if TYPE_CHECKING:
    from benchmarks.serving import ServingConfig

WORKER_LAYOUTS = {  # name -> (worker processes, PARAFEED_THREADS of each; None: the default, cores / workers)
    "1 worker": (1, None),
    "2 workers (default threads: 1 each)": (2, None),
    "2 workers x 2 threads (oversubscribed)": (2, 2),
}


def workers(cfg: ServingConfig, registry: list[str]) -> dict[str, Any]:
    """Samples/s through Redis with one worker process or two on this machine, the cores shared by the threads
    setting (``workers_per_host``), beside two workers that each take every core (the old default)."""
    from benchmarks.serving import server_round

    load = replace(cfg, batch=4, clients=cfg.worker_clients)
    procs, bases = Processes(), {}
    try:
        for name, (count, threads) in WORKER_LAYOUTS.items():
            url = procs.redis()
            if url is None:
                return {"skipped": "redis-server not found"}
            env = {"PARAFEED_WORKERS_PER_HOST": str(count), **({"PARAFEED_THREADS": str(threads)} if threads else {})}
            for k in range(count):
                procs.start(*PARAFEED, "worker", "--redis-url", url, "--device", "cpu", "--name", f"w{k}", *registry,
                            env=env)  # fmt: skip
            bases[name] = procs.server("--redis-url", url, *registry)
            LeanClient(bases[name]).post("/sample", {"model": cfg.model, "num_samples": 4, "method": cfg.method})
        totals = {name: [0, 0.0, 0] for name in bases}
        for r in range(cfg.worker_rounds):
            for name, base in bases.items():
                n, t, errors = server_round(load, base, 5_000_000 * (r + 1))
                totals[name] = [totals[name][0] + n, totals[name][1] + t, totals[name][2] + errors]
    finally:
        procs.stop()
    layouts = {name: {"samples_per_s": round(n / t, 2), "errors": e} for name, (n, t, e) in totals.items()}
    return {"clients": load.clients, "samples_per_request": load.batch, "rounds": cfg.worker_rounds, "layouts": layouts}
