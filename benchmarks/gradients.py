"""Gradient benchmark: RNN backpropagation by BPTT, Jacobi and parallel scan: depth against work.

Grid: sequence length T in {100, 784, 4096}, hidden size H in {32, 128}, batch B in {1, 32}; the vanilla softplus
RNN of Song et al. (random weights at the trained model's initial scale; the gradient's cost does not depend on
what the weights learned). Per method: sequential depth (BPTT: T steps; Jacobi: iterations until certified;
scan: ceil(log2 T) combine levels), wall time (median of repeats, same run), max |diff| against float32 autograd and
every method's (BPTT's too) max |diff| against float64 autograd, the yardstick for float32 rounding.
On a CPU the scan does O(H) more arithmetic than BPTT (matrix-matrix combines instead of matrix-vector steps) on
two cores, so it is slower here; depth is what it buys, which pays on hardware that runs the combines in parallel.

    python -m benchmarks.gradients [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.harness import RESULTS, environment, timed, write_json
from models.rnn import RecurrentRegressor, RNNConfig
from samplers.auto import Choice
from samplers.auto import record as record_auto
from samplers.bptt import autograd_gradient, max_abs_diff, rnn_gradient


@dataclass(frozen=True)
class GradientConfig:
    lengths: tuple[int, ...] = (100, 784, 4096)
    hidden: tuple[int, ...] = (32, 128)
    batches: tuple[int, ...] = (1, 32)
    repeats: int = 3
    seed: int = 0
    # Jacobi costs up to T iterations of O(B T H^2) each; beyond this many it stops and reports the truncated
    # (n-step BPTT) gradient as exact=False with its distance to the exact one.
    jacobi_max_iterations: int = 1024
    long_run_work: int = 784 * 128 * 32  # B*T*H above this: one timed run, no warm-up


def run(cfg: GradientConfig, device: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    grid = [(t, h, b) for t in cfg.lengths for h in cfg.hidden for b in cfg.batches]
    for length, hidden, batch in tqdm(grid, desc="gradients", unit="config"):
        torch.manual_seed(cfg.seed)
        side = round(length**0.5)
        model = RecurrentRegressor(RNNConfig(hidden_size=hidden, image_size=side)).to(device).eval()
        x = torch.rand(batch, length, device=device)
        long_run = length * hidden * batch > cfg.long_run_work
        repeats, warmup = (1, False) if long_run else (cfg.repeats, True)
        seconds, (_, reference) = timed(partial(autograd_gradient, model, x, "params"), cfg.repeats, device)
        # float64 autograd: the yardstick for float32 rounding, BPTT's own included
        _, reference64 = autograd_gradient(copy.deepcopy(model).double(), x.double(), "params")
        rows.append({"T": length, "H": hidden, "B": batch, "method": "sequential (autograd BPTT)",
                     "depth": length, "seconds": seconds, "max_abs_diff": 0.0, "exact": True,
                     "max_abs_diff_vs_float64": max_abs_diff(reference, reference64),
                     "max_abs_gradient": max(float(g.abs().max()) for g in reference.values())})  # fmt: skip
        for method in ("scan", "jacobi"):
            cap = cfg.jacobi_max_iterations if method == "jacobi" else None
            seconds, result = timed(
                partial(rnn_gradient, model, x, method, max_iterations=cap), repeats, device, warmup
            )
            rows.append({"T": length, "H": hidden, "B": batch, "method": method, "depth": result.iterations,
                         "seconds": seconds, "max_abs_diff": max_abs_diff(result.gradients, reference),
                         "exact": result.exact,
                         "max_abs_diff_vs_float64": max_abs_diff(result.gradients, reference64)})  # fmt: skip
    for r in rows:
        base = next(b for b in rows if (b["T"], b["H"], b["B"]) == (r["T"], r["H"], r["B"]) and b["depth"] == b["T"]
                    and b["method"].startswith("sequential"))  # fmt: skip
        r["seconds"] = round(r["seconds"], 5)
        r["speedup_vs_bptt"] = round(base["seconds"] / r["seconds"], 3)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, env: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, marker in (("sequential (autograd BPTT)", "o"), ("scan", "s"), ("jacobi", "^")):
        for hidden, style in ((32, "-"), (128, "--")):
            for batch in sorted({r["B"] for r in rows}):
                pick = [r for r in rows if r["method"] == method and r["H"] == hidden and r["B"] == batch]
                if not pick:
                    continue
                label = f"{method.split(' ')[0]} H={hidden} B={batch}"
                axes[0].plot([r["T"] for r in pick], [r["depth"] for r in pick], style, marker=marker, label=label)
                axes[1].plot([r["T"] for r in pick], [r["seconds"] for r in pick], style, marker=marker, label=label)
    for ax, title in ((axes[0], "sequential depth (steps on the critical path)"), (axes[1], "wall time (s)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"RNN gradients: depth vs work ({env['device']}, {env['torch_threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| T | H | B | method | depth | exact | wall s | vs BPTT | max abs diff | vs float64 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['T']} | {r['H']} | {r['B']} | {r['method']} | {r['depth']} | {r['exact']} | "
                     f"{r['seconds']:.4f} | {r['speedup_vs_bptt']}x | {r['max_abs_diff']:.1e} | "
                     f"{r['max_abs_diff_vs_float64']:.1e} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T in {100, 784}, H=32, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cfg = GradientConfig(lengths=(100, 784), hidden=(32,), repeats=1) if args.quick else GradientConfig()
    rows = run(cfg, args.device)
    env = environment(args.device)
    name = f"gradients{'-quick' if args.quick else ''}-{torch.device(args.device).type}"
    path = write_json(name, {"benchmark": "gradients", "config": asdict(cfg), "environment": env, "results": rows},
                      args.out)  # fmt: skip
    plot(rows, path.with_suffix(".png"), env)
    if not args.quick:  # "auto" for the shipped rnn-fmnist: the fastest exact method at its size, T=100, H=128
        size = [r for r in rows if (r["T"], r["H"], r["B"]) == (100, 128, max(cfg.batches)) and r["exact"]]
        if size:
            fastest = min(size, key=lambda r: r["seconds"])["method"]
            method = "sequential" if fastest.startswith("sequential") else fastest
            record_auto({"rnn-gradient": Choice(method)}, torch.device(args.device).type)
    print(table(rows))
    print(f"\nwrote {path}")
    return {"results": rows}


if __name__ == "__main__":
    main()
