"""Pictures of the sampling benchmark: speedups, iteration histograms, the frozen prefix, a sample converging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _speedups(ax: Any, rows: list[dict[str, Any]], model: str) -> None:
    picked = [r for r in rows if r["model"] == model and not r["baseline"] and r["x0"] == "zeros"]
    runs = list(dict.fromkeys(r["run"] for r in picked))
    batches = sorted({r["batch"] for r in picked})
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        values = [next((r["speedup_vs_strongest_sequential"] for r in picked if r["run"] == run and r["batch"] == b), 0)
                  for b in batches]  # fmt: skip
        ax.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(batches))], values, width, label=run)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("speedup vs strongest sequential")
    ax.set_title(f"{model}: wall-clock, exact methods")
    ax.legend(fontsize=7)


def _histograms(ax: Any, rows: list[dict[str, Any]]) -> None:
    for model, run, batch in (("made-fmnist", "jacobi", 100), ("made-fmnist", "jacobi_split", 100),
                              ("pixelcnnpp-fmnist", "jacobi (cached)", 16)):  # fmt: skip
        r = next((r for r in rows if r["model"] == model and r["run"] == run and r["batch"] == batch), None)
        if r is not None:
            ax.hist(r["iterations"], bins=30, alpha=0.55, label=f"{model} {run} (B={batch})")
    ax.set_xlabel("network evaluations per sample (confirming one included)")
    ax.set_ylabel("samples")
    ax.set_title("Per-sample stopping: iterations vary widely within a batch")
    ax.legend(fontsize=7)


def _final_fraction(ax: Any, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["batch"] == 16 and r["fraction_final"]:
            ax.plot(range(1, len(r["fraction_final"]) + 1), r["fraction_final"], label=f"{r['model']} {r['run']}")
    ax.set_xscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("fraction of positions final (mean over batch of 16)")
    ax.set_title("The certified prefix grows with every evaluation")
    ax.legend(fontsize=7)


def _convergence(rows: list[dict[str, Any]], path: Path) -> Path | None:
    strips = []
    for model, runs in (("made-fmnist", ("sequential_naive", "jacobi_split")),
                        ("pixelcnnpp-fmnist", ("sequential_naive (band-cached)", "jacobi (cached)"))):  # fmt: skip
        for run in runs:
            r = next((r for r in rows if r["model"] == model and r["run"] == run and r["batch"] == 16), None)
            if r is not None and r["snapshots"]:
                strips.append((f"{model}\n{run}", r["snapshots"]))
    if not strips:
        return None
    columns = max(len(s) for _, s in strips)
    fig, axes = plt.subplots(len(strips), columns, figsize=(1.5 * columns, 1.7 * len(strips)), squeeze=False)
    for i, (label, snaps) in enumerate(strips):
        for j in range(columns):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(snaps):
                k = sorted(snaps, key=int)[j]
                image = np.array(snaps[k]).reshape(28, 28)
                ax.imshow(image, cmap="gray", vmin=0, vmax=1 if image.max() <= 1 else 255)
                ax.set_title(f"after {k}", fontsize=7)
        axes[i][0].text(-4, 14, label, fontsize=7, ha="right", va="center")
    fig.suptitle(
        "One sample, network evaluations so far: sequential fills pixel by pixel, Jacobi refines all", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_all(payload: dict[str, Any], out: Path, stem: str) -> list[Path]:
    rows = payload["results"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, model in zip(axes[0], models + [None] * (2 - len(models)), strict=False):
        if model is not None:
            _speedups(ax, rows, model)
    _histograms(axes[1][0], rows)
    _final_fraction(axes[1][1], rows)
    env = payload["environment"]
    where = env.get("device_name") or f"{env['cpu_count']} cores, {env['torch_threads']} torch threads"
    fig.suptitle(f"Exact parallel sampling on {env['device']} ({where}); every sample bitwise equal to sequential")
    fig.tight_layout()
    main = out / f"{stem}.png"
    fig.savefig(main, dpi=100)
    plt.close(fig)
    written = [main]
    convergence = _convergence(rows, out / f"{stem}-convergence.png")
    if convergence is not None:
        written.append(convergence)
    return written
