"""The GPU check: exactness of every method of every served model on one device, and the headline ratios.

On CUDA (TF32 off, deterministic kernels: ``samplers.determinism``) it checks that every sampling method of every
sampler gives the reference sampler's samples bit for bit (or certified: the response says how), that DenseNet
and RNN inference by every method equals the sequential forward, and that gradients by every method match BPTT;
then it times each sampler's methods at batch 1, 16 and 100 against the strongest sequential sampler (the model's
``sequential``), and gradients and inference against their sequential method, in the same run. It writes
``gpu-check-<device>.json`` and a PNG of the ratios. Its orthogonal section times the round-robin Givens layer
against PyTorch's orthogonal parametrizations, forward + backward, at n = 256 and 1024 (``benchmarks.orthogonal``).
``--dry`` runs the same code on the CPU at small sizes (CI runs it on tiny models, so the check cannot rot before a
GPU is lent).

    python -m benchmarks.gpu_check [--device cuda] [--out benchmarks/results]     # under 8 minutes on one H100
    python -m benchmarks.gpu_check --dry --registry DIR --out /tmp/check           # CPU, seconds
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import RESULTS, environment, save_figure, write_json
from benchmarks.orthogonal import on_device
from samplers.engine import Engine
from samplers.requests import REQUESTS


@dataclass(frozen=True)
class CheckConfig:
    batches: tuple[int, ...] = (1, 16, 100)
    exact_samples: int = 8  # samples per exactness check
    repeats: int = 3  # timed runs per (model, method, batch): the median
    seed: int = 0
    skip_slow_over_s: float = 60.0  # a method that took longer than this once is not timed at larger batches


def run(engine: Engine, kind: str, model: str, **fields: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    body = engine.run(kind, REQUESTS[kind](model=model, **fields))
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return body, time.perf_counter() - start


def exactness(engine: Engine, cfg: CheckConfig) -> list[dict[str, Any]]:
    """Every method of every model against its task's reference, on this device."""
    rows = []
    for info in engine.models():
        for task, methods in info.tasks.items():
            for method in methods:
                if task == "sample":
                    body, _ = run(engine, task, info.name, num_samples=cfg.exact_samples, method=method,
                                  seed=cfg.seed, verify=True)  # fmt: skip
                    ok, how = bool(body.verified), body.exactness
                else:
                    fields = {"batch": 2, "seed": cfg.seed, "method": method, "verify": True}
                    body, _ = run(engine, task, info.name, **fields)
                    diff = body.verified.max_abs_diff
                    ok, how = body.exact and diff <= 1e-4, f"max_abs_diff {diff:.2e}"
                rows.append({"model": info.name, "task": task, "method": method, "exact": ok, "how": how})
    return rows


def ratios(engine: Engine, cfg: CheckConfig) -> list[dict[str, Any]]:
    """Wall time of every method against the strongest sequential one, same run, per batch size."""
    rows = []
    for info in engine.models():
        for task, methods in info.tasks.items():
            slow: set[str] = set()
            for batch in cfg.batches:
                size = {"num_samples": batch} if task == "sample" else {"batch": batch}
                times = {}
                for method in [m for m in methods if m != "auto" and m not in slow and m != "sequential_naive"]:
                    fields = {**size, "method": method, "seed": cfg.seed}
                    run(engine, task, info.name, **fields)  # warm-up
                    measured = sorted(run(engine, task, info.name, **fields)[1] for _ in range(cfg.repeats))
                    times[method] = measured[len(measured) // 2]
                    if times[method] > cfg.skip_slow_over_s:
                        slow.add(method)
                baseline = times.get("sequential")
                for method, seconds in times.items():
                    speedup = round(baseline / seconds, 2) if baseline else None
                    rows.append({"model": info.name, "task": task, "batch": batch, "method": method,
                                 "seconds": round(seconds, 5), "speedup_vs_sequential": speedup})  # fmt: skip
    return rows


def plot(payload: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["ratios"] if r["speedup_vs_sequential"] and r["method"] != "sequential"]
    labels = [f"{r['model']} {r['task']} b{r['batch']} {r['method']}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(rows) + 1.5))
    ax.barh(labels, [r["speedup_vs_sequential"] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speedup vs the model's strongest sequential method (same run)")
    ax.set_title(f"GPU check on {payload['environment'].get('device_name') or payload['environment']['device']}")
    ax.tick_params(axis="y", labelsize=6)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry", action="store_true", help="CPU, batch 1 and 2, one repeat: the CI's run")
    parser.add_argument("--registry", default=None, help="checkpoint directory (default: the shipped models)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cfg = CheckConfig(batches=(1, 2), exact_samples=2, repeats=1) if args.dry else CheckConfig()
    device = "cpu" if args.dry else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --dry for the CPU run")
    engine = Engine(device, args.registry)
    exact = exactness(engine, cfg)  # engine.run manages grad modes itself (gradients need autograd)
    payload = {"benchmark": "gpu-check", "dry": args.dry, "config": asdict(cfg), "environment": environment(device),
               "exactness": exact, "ratios": ratios(engine, cfg),
               "orthogonal": on_device(device, (16,) if args.dry else (256, 1024), cfg.repeats)}  # fmt: skip
    name = f"gpu-check-{engine.device.type}" + ("-dry" if args.dry else "")
    path = write_json(name, payload, args.out)
    picture = plot(payload, args.out / f"{name}.png")
    failed = [r for r in exact if not r["exact"]]
    print(f"wrote {path} and {picture}; exactness: {len(exact) - len(failed)}/{len(exact)} exact")
    for r in failed:
        print(f"NOT EXACT: {r}")
    return payload


if __name__ == "__main__":
    main()
