"""DenseNet benchmark: the whole network as one triangular system, solved by Jacobi, against the ordinary forward.

On the shipped densenet-fmnist and real test images, per image: iterations until the logits are exact (bitwise the
sequential forward's), iterations until the predicted class has settled for good, and the same with tolerances;
wall time per method and batch size, against two sequential forwards: the bitwise reference (``forward``,
full-width masked layers, what Jacobi reproduces bit for bit) and the textbook concatenating forward (the fastest
sequential baseline; equal to rounding). Song et al. report that predictions settle long before logits are exact,
and that exactness and speed conflict on one device: a Jacobi iteration evaluates every layer, so on a CPU it
costs about as much as a whole forward. The "parallel estimate" column is the critical path on hardware that runs
the unknowns of an iteration side by side: iterations x the slowest single unknown (the paper's estimate).

    python -m benchmarks.dense [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from benchmarks.harness import RESULTS, environment, timed, write_json
from models.densenet import DenseNet
from models.invariance import pad_rows
from samplers.auto import Choice
from samplers.auto import record as record_auto
from samplers.engine import Engine
from samplers.families.densenet import DenseSystem, dense_solve
from solvers import FixedPointBatch


@dataclass(frozen=True)
class DenseConfig:
    images: int = 256  # test images for the iteration statistics
    batches: tuple[int, ...] = (1, 32)
    tolerances: tuple[float, ...] = (0.0, 1e-4, 1e-2)
    repeats: int = 3
    seed: int = 0


def settle_statistics(system: DenseSystem, images: torch.Tensor) -> dict[str, Any]:
    """Per image: evaluations to exact logits and to a prediction that never changes again."""
    history: list[torch.Tensor] = []

    def record(batch: FixedPointBatch) -> None:
        history.append(system.logits(batch.x).argmax(dim=1).clone())

    solved = dense_solve(system, images, "jacobi", callback=record)
    final = solved.logits.argmax(dim=1)
    predictions = torch.stack(history)  # (K, B)
    agree = predictions == final[None]
    # settled at k: agrees from evaluation k on (rows that converged keep their last prediction)
    settled = torch.full_like(final, predictions.shape[0])
    for k in range(predictions.shape[0] - 1, -1, -1):
        settled = torch.where(agree[k:].all(dim=0), k + 1, settled)
    reference = system.model(images)
    return {"exact_iterations": solved.iterations.tolist(), "settle_iterations": settled.tolist(),
            "bitwise_equal": bool(torch.equal(solved.logits, reference)), "unknowns": system.length}  # fmt: skip


def slowest_unknown_seconds(system: DenseSystem, images: torch.Tensor, device: str) -> float:
    """Time of the most expensive single unknown (one layer, transition, stem or head) on this batch."""
    model, x = system.model, pad_rows(images)
    costs = [timed(lambda: model.stem(x), 3, device)[0]]
    h = model.stem(x)
    for block, transition in model.stages():
        features = block(h)
        costs.append(timed(partial(block.evaluate_layers, features, block.layers - 1, block.layers), 3, device)[0])
        h = transition(features) if transition is not None else features
        if transition is not None:
            costs.append(timed(partial(transition, features), 3, device)[0])
    costs.append(timed(lambda: model.head(h), 3, device)[0])
    return max(costs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cfg = DenseConfig(images=32, repeats=1) if args.quick else DenseConfig()
    engine = Engine(args.device)
    device = str(engine.device)
    model = cast(DenseNet, engine.model("densenet-fmnist"))
    system = DenseSystem(model)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        images = engine.test_inputs("densenet-fmnist", cfg.images, cfg.seed)
        stats = settle_statistics(system, images)
        for batch in cfg.batches:
            x = images[:batch]
            reference = model(x)
            slowest = slowest_unknown_seconds(system, x, device)
            baselines: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
                ("sequential forward (bitwise reference)", model),
                ("sequential forward (textbook, concatenating)", model.concat_forward),
            )
            for label, forward in baselines:
                seconds, logits = timed(partial(forward, x), cfg.repeats, device)
                rows.append({"batch": batch, "method": label, "tol": 0.0, "iterations": system.length,
                             "seconds": seconds, "parallel_estimate_s": None, "baseline": True,
                             "max_abs_diff": float((logits - reference).abs().max())})  # fmt: skip
            for tol in cfg.tolerances:
                seconds, solved = timed(partial(dense_solve, system, x, "jacobi", tol), cfg.repeats, device)
                its = solved.iterations.double()
                rows.append({"batch": batch, "method": "jacobi", "tol": tol, "iterations": its.mean().item(),
                             "seconds": seconds, "parallel_estimate_s": its.max().item() * slowest, "baseline": False,
                             "max_abs_diff": float((solved.logits - reference).abs().max())})  # fmt: skip
    for r in rows:
        strongest = min(b["seconds"] for b in rows if b["baseline"] and b["batch"] == r["batch"])
        r["speedup_vs_strongest_sequential"] = round(strongest / r["seconds"], 3)
        estimate = r["parallel_estimate_s"]
        r["estimated_parallel_speedup"] = None if estimate is None else round(strongest / estimate, 3)
    env = environment(device)
    exact = torch.tensor(stats["exact_iterations"], dtype=torch.float64)
    settle = torch.tensor(stats["settle_iterations"], dtype=torch.float64)
    summary = {"unknowns": stats["unknowns"], "images": cfg.images, "bitwise_equal": stats["bitwise_equal"],
               "exact_mean": exact.mean().item(), "exact_max": exact.max().item(),
               "settle_mean": settle.mean().item(), "settle_max": settle.max().item()}  # fmt: skip
    payload = {"benchmark": "dense", "config": asdict(cfg), "environment": env, "summary": summary, "results": rows}
    payload.update(exact_iterations=stats["exact_iterations"], settle_iterations=stats["settle_iterations"])
    name = f"dense{'-quick' if args.quick else ''}-{engine.device.type}"
    path = write_json(name, payload, args.out)
    plot(payload, path.with_suffix(".png"))
    if not args.quick:  # "auto" for /infer: the faster exact method the API offers, at the largest batch
        served = [r for r in rows if r["batch"] == max(cfg.batches) and r["tol"] == 0.0
                  and r["method"] in ("sequential forward (bitwise reference)", "jacobi")]  # fmt: skip
        fastest = min(served, key=lambda r: r["seconds"])["method"]
        record_auto({"densenet-infer": Choice("jacobi" if fastest == "jacobi" else "sequential")}, engine.device.type)
    print(summary)
    print(table(rows))
    print(f"wrote {path}")
    return payload


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| batch | method | tol | iterations (mean) | wall s | vs strongest sequential | parallel estimate |"
             " max abs diff |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        estimate = "" if r["estimated_parallel_speedup"] is None else f"{r['estimated_parallel_speedup']}x"
        lines.append(f"| {r['batch']} | {r['method']} | {r['tol']:g} | {r['iterations']:.1f} | {r['seconds']:.4f} | "
                     f"{r['speedup_vs_strongest_sequential']}x | {estimate} | {r['max_abs_diff']:.1e} |")  # fmt: skip
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = range(1, payload["summary"]["unknowns"] + 2)
    ax.hist(payload["settle_iterations"], bins=bins, alpha=0.6, label="prediction settled")
    ax.hist(payload["exact_iterations"], bins=bins, alpha=0.6, label="logits exact (bitwise)")
    ax.set_xlabel(f"Jacobi iterations (the network has {payload['summary']['unknowns']} unknowns)")
    ax.set_ylabel("test images")
    ax.set_title("DenseNet-BC as one triangular system: when answers become final")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
