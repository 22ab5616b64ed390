"""Synthetic benchmark: the four solver methods on lower-triangular systems of known character.

Systems (T unknowns per row, B rows, all run through ``solvers.solve`` with a ``rows``-aware step):
- ``counter``: s_t = s_{t-1} + 1. Every unknown changes whenever its predecessor does: the worst case, Jacobi
  needs all T evaluations (a check that the harness measures what it claims).
- ``fading``: s_t = 0.5 s_{t-1} + b_t in float32. Mathematically a chain, but contributions older than ~25
  steps fall below one ulp, so the computed map converges long before T.
- ``made-bernoulli``: a MADE-shaped masked MLP (T -> H -> H -> T, random weights) sampling binary unknowns
  with fixed noise, x_t = 1[u_t < sigmoid(logit_t)]: the workload of autoregressive sampling.
- ``made-tanh``: the same network with continuous outputs, s = tanh(logits).

Per method it reports evaluations (the sequential depth), per-row iterations, median wall time, speedups vs
``sequential`` measured in the same run, and the fraction of rows bitwise equal to the sequential answer.

    python -m benchmarks.synthetic [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.harness import RESULTS, environment, timed, write_json
from models.invariance import pad_rows
from solvers import METHODS, solve

SYSTEMS = ("counter", "fading", "made-bernoulli", "made-tanh")


@dataclass(frozen=True)
class SyntheticConfig:
    length: int = 784  # T: one unknown per pixel of a 28x28 image, as in MADE sampling
    batch: int = 100  # B: Song et al.'s sampling batch
    hidden: int = 512  # MADE hidden width (784-512-512)
    block_size: int = 28  # one image row, for jacobi_gs blocks and the gs_jacobi window
    repeats: int = 3  # timed runs per method (median reported), after one warm-up
    seed: int = 0


def masked_mlp(length: int, hidden: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random weights with MADE masks (natural order): output t sees inputs < t only. [(weight, bias)] x 3."""
    g = torch.Generator().manual_seed(seed)
    degree_in = torch.arange(length)
    degree_hidden = torch.randint(0, length - 1, (hidden,), generator=g)
    masks = [
        degree_hidden[:, None] >= degree_in[None, :],
        degree_hidden[:, None] >= degree_hidden[None, :],
        degree_in[:, None] > degree_hidden[None, :],
    ]
    layers = []
    for mask in masks:
        fan_in = mask.shape[1]
        weight = torch.randn(mask.shape, generator=g) * (2.0 / fan_in) ** 0.5 * mask
        layers.append((weight, torch.randn(mask.shape[0], generator=g) * 0.1))
    return layers


def make_step(kind: str, cfg: SyntheticConfig) -> Callable[..., torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.rand(cfg.batch, cfg.length, generator=g)
    if kind == "counter":

        def counter(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.ones_like(x[:, :1]), x[:, :-1] + 1], dim=1)

        return counter
    if kind == "fading":

        def fading(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x[:, :1]), 0.5 * x[:, :-1]], dim=1) + noise[rows]

        return fading
    layers = masked_mlp(cfg.length, cfg.hidden, cfg.seed)

    def network(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        h = pad_rows(x)
        for i, (weight, bias) in enumerate(layers):
            h = F.linear(h, weight, bias)
            h = F.relu(h) if i < len(layers) - 1 else h
        logits = h[: x.shape[0]]
        if kind == "made-bernoulli":
            return (noise[rows] < torch.sigmoid(logits)).to(x.dtype)
        return torch.tanh(logits)

    return network


def run(cfg: SyntheticConfig, systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(systems) * len(METHODS), desc="synthetic", unit="run", leave=False)
    with torch.inference_mode():
        for kind in systems:
            step = make_step(kind, cfg)
            x0 = torch.zeros(cfg.batch, cfg.length)
            baseline: dict[str, Any] = {}
            for method in METHODS:
                seconds, result = timed(partial(solve, step, x0, method=method, block_size=cfg.block_size), cfg.repeats)
                if method == "sequential":
                    baseline = {"x": result.x, "seconds": seconds, "evaluations": result.evaluations}
                iterations = result.iterations.double()
                equal = (result.x == baseline["x"]).flatten(1).all(1)
                rows.append(
                    {
                        "system": kind,
                        "method": method,
                        "evaluations": result.evaluations,
                        "iterations_mean": round(iterations.mean().item(), 2),
                        "iterations_median": iterations.median().item(),
                        "iterations_max": int(iterations.max()),
                        "row_evaluations": int(result.iterations.sum()),
                        "seconds": round(seconds, 5),
                        "speedup_wall": round(baseline["seconds"] / seconds, 2),
                        "speedup_evaluations": round(baseline["evaluations"] / max(result.evaluations, 1), 2),
                        "equal_fraction": equal.double().mean().item(),
                        "converged": bool(result.converged.all()),
                    }
                )
                progress.update()
    progress.close()
    return {"benchmark": "synthetic", "config": asdict(cfg), "environment": environment(), "results": rows}


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    systems = list(dict.fromkeys(r["system"] for r in results))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        picked = [next(r for r in results if r["system"] == s and r["method"] == method) for s in systems]
        xs = [j + (i - (len(METHODS) - 1) / 2) * width for j in range(len(systems))]
        axes[0].bar(xs, [r["evaluations"] for r in picked], width, label=method)
        axes[1].bar(xs, [r["speedup_wall"] for r in picked], width, label=method)
    cfg = payload["config"]
    axes[0].set_yscale("log")
    axes[0].set_ylabel("step evaluations (sequential depth)")
    axes[0].set_title(f"Evaluations to the exact answer (T={cfg['length']}, B={cfg['batch']})")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[1].set_ylabel("wall-clock speedup vs sequential")
    axes[1].set_title(f"Speedup, same run ({payload['environment']['device']})")
    for ax in axes:
        ax.set_xticks(range(len(systems)), systems)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(payload: dict[str, Any]) -> str:
    lines = ["| system | method | evaluations | iterations mean / max | wall s | speedup (wall) | exact rows |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in payload["results"]:
        lines.append(
            f"| {r['system']} | {r['method']} | {r['evaluations']} | {r['iterations_mean']} / {r['iterations_max']}"
            f" | {r['seconds']:.3f} | {r['speedup_wall']}x | {r['equal_fraction']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (T=196, B=16, one repeat)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = SyntheticConfig(length=196, batch=16, hidden=128, block_size=14, repeats=1)
    cfg = quick if args.quick else SyntheticConfig()
    payload = run(cfg)
    name = "synthetic-quick" if args.quick else "synthetic"
    path = write_json(name, payload, args.out)
    plot(payload, path.with_suffix(".png"))
    print(table(payload))
    print(f"\nwrote {path} and {path.with_suffix('.png')}")
    return payload


if __name__ == "__main__":
    main()
