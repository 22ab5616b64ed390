"""Orthogonal matrices: the round-robin Givens layer against the sequential Givens product and PyTorch's own
orthogonal parametrizations (Hamze 2021, arXiv 2106.00003; ``models.givens``).

For n = 64 .. 1024: the time to build U from its parameters (no autograd), and to build it and backpropagate a
loss <U, W> to the parameters (forward + backward), for
- ``givens round-robin``: n-1 rounds of n/2 commuting rotations (depth n-1 forward, ~(n-1) log2 n backward);
- ``givens sequential``: the same n(n-1)/2 rotations one at a time, autograd recording each (depth n(n-1)/2);
  timed over a prefix of its rotations above ``naive_full_max`` and extrapolated linearly (every rotation costs
  the same; marked ``extrapolated``);
- ``torch matrix_exp`` / ``torch cayley`` / ``torch householder``: ``torch.nn.utils.parametrizations.orthogonal``
  on an n x n Linear (the parametrizations users reach for today);
- ``geotorch`` (SO(n), its default map) when it is installed.
Parallel depth (sequential steps on a machine with enough cores) is given where it is defined by the method.

Sequence models (``--sequences``): what orthogonality does to the parallel solvers. On the shipped T = 784 models
(the orthogonal RNN, the GRU, and the vanilla softplus RNN trained on the same task), test images, batch 8:
/infer by sequential and Jacobi, /gradient by BPTT, Jacobi and the scan, through the library's engine: Jacobi
iterations (the exact prefix grows by at least one step per iteration; a recurrence that forgets slowly needs
close to T), and wall time against the sequential method.

    python -m benchmarks.orthogonal [--quick] [--sequences] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrizations
from tqdm import tqdm

from benchmarks.harness import RESULTS, environment, save_figure, timed, write_json
from models.givens import Givens


@dataclass(frozen=True)
class OrthogonalConfig:
    sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    repeats: int = 5
    naive_full_max: int = 256  # the sequential product runs whole up to this n, over a prefix above it
    naive_prefix: int = 20000  # rotations timed above naive_full_max
    seed: int = 0


Built = tuple[Callable[[], torch.Tensor], list[nn.Parameter]]  # (build U, its parameters)
Method = Callable[[int, str], Built]  # (n, device) -> Built


def givens(n: int, device: str = "cpu") -> Built:
    layer = Givens(n, init_scale=0.5).to(device)
    return layer.matrix, [layer.angles]


def torch_map(kind: str) -> Method:
    def make(n: int, device: str = "cpu") -> Built:
        linear = parametrizations.orthogonal(nn.Linear(n, n, bias=False, device=device), orthogonal_map=kind)
        return (lambda: cast(torch.Tensor, linear.weight)), list(linear.parameters())

    return make


def geotorch_map() -> Method | None:
    try:
        import geotorch  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    def make(n: int, device: str = "cpu") -> Built:
        linear = nn.Linear(n, n, bias=False, device=device)
        geotorch.special_orthogonal(linear, "weight")
        return (lambda: linear.weight), list(linear.parameters())

    return make


def forward_backward(build: Callable[[], torch.Tensor], params: list[nn.Parameter], weight: torch.Tensor) -> None:
    loss = (build() * weight).sum()
    torch.autograd.grad(loss, params)


def naive_seconds(n: int, cfg: OrthogonalConfig, weight: torch.Tensor) -> tuple[float, float, bool]:
    """(build s, forward + backward s, extrapolated) of the one-rotation-at-a-time product."""
    layer = Givens(n, init_scale=0.5)
    total = n * (n - 1) // 2
    count = total if n <= cfg.naive_full_max else min(cfg.naive_prefix, total)
    with torch.no_grad():
        start = time.perf_counter()
        layer.sequential_matrix(count)
        build = time.perf_counter() - start
    start = time.perf_counter()
    torch.autograd.grad((layer.sequential_matrix(count) * weight).sum(), [layer.angles])
    both = time.perf_counter() - start
    scale = total / count
    return build * scale, both * scale, count < total


def methods() -> dict[str, Method]:
    """The round-robin layer and the parametrizations it is compared with (the sequential product aside)."""
    found: dict[str, Method] = {"givens round-robin": givens}
    for kind in ("matrix_exp", "cayley", "householder"):
        found[f"torch {kind}"] = torch_map(kind)
    geo = geotorch_map()
    if geo is not None:
        found["geotorch"] = geo
    return found


def on_device(device: str, sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Forward + backward seconds of every method but the sequential product on ``device`` (the GPU check)."""
    rows = []
    for n in sizes:
        weight = torch.randn(n, n, device=device)
        for name, make in methods().items():
            build, params = make(n, device)
            seconds, _ = timed(partial(forward_backward, build, params, weight), repeats, device)
            rows.append({"n": n, "method": name, "forward_backward_s": round(seconds, 6)})
    return rows


def measure(cfg: OrthogonalConfig, progress: tqdm) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in cfg.sizes:
        torch.manual_seed(cfg.seed)
        weight = torch.randn(n, n)
        for name, make in methods().items():
            build, params = make(n, "cpu")
            with torch.no_grad():
                build_s, _ = timed(build, cfg.repeats)
            both_s, _ = timed(partial(forward_backward, build, params, weight), cfg.repeats)
            rounds = n - 1 + n % 2  # backward: each round's dot products reduce n terms, log2 n deep
            depth = {"givens round-robin": (rounds, rounds * max(1, (n - 1).bit_length()))}
            forward_depth, backward_depth = depth.get(name, (None, None))
            rows.append({"n": n, "method": name, "build_s": round(build_s, 6), "forward_backward_s": round(both_s, 6),
                         "depth_forward": forward_depth, "depth_backward": backward_depth,
                         "extrapolated": False})  # fmt: skip
            progress.update()
        build_s, both_s, extrapolated = naive_seconds(n, cfg, weight)
        rows.append({"n": n, "method": "givens sequential", "build_s": round(build_s, 6),
                     "forward_backward_s": round(both_s, 6), "depth_forward": n * (n - 1) // 2,
                     "depth_backward": n * (n - 1) // 2, "extrapolated": extrapolated})  # fmt: skip
        progress.update()
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per n: round-robin against the sequential product (build) and against the fastest PyTorch map (fwd+bwd)."""
    out = []
    for n in sorted({r["n"] for r in rows}):
        at = {r["method"]: r for r in rows if r["n"] == n}
        ours, naive = at["givens round-robin"], at["givens sequential"]
        others = [r for name, r in at.items() if name.startswith("torch") or name == "geotorch"]
        fastest = min(others, key=lambda r: r["forward_backward_s"])
        out.append({
            "n": n,
            "vs_sequential_build": round(naive["build_s"] / ours["build_s"], 1),
            "vs_sequential_forward_backward": round(naive["forward_backward_s"] / ours["forward_backward_s"], 1),
            "fastest_torch": fastest["method"],
            "vs_fastest_torch_forward_backward": round(fastest["forward_backward_s"] / ours["forward_backward_s"], 2),
        })  # fmt: skip
    return out


SEQUENCE_MODELS = ("orthogonal-fmnist", "gru-fmnist", "rnn784-fmnist")


def sequences(batch: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Jacobi iterations and wall time of inference and gradients on the shipped T = 784 sequence models."""
    from benchmarks.gpu_check import run
    from samplers.engine import Engine

    engine = Engine("cpu")
    names = [info.name for info in engine.models() if info.name in SEQUENCE_MODELS]
    rows: list[dict[str, Any]] = []
    for name in tqdm(names, desc="sequence models", unit="model"):
        for task, methods in (("infer", ("sequential", "jacobi")), ("gradient", ("sequential", "jacobi", "scan"))):
            base = None
            for method in methods:
                run(engine, task, name, batch=batch, seed=seed, method=method)  # warm-up
                body, seconds = run(engine, task, name, batch=batch, seed=seed, method=method)
                base = seconds if method == "sequential" else base
                iterations = body.iterations if isinstance(body.iterations, list) else [body.iterations]
                rows.append({"model": name, "task": task, "method": method, "batch": batch,
                             "iterations_mean": round(sum(iterations) / len(iterations), 1),
                             "iterations_max": max(iterations), "T": getattr(body, "sequential_steps", None),
                             "seconds": round(seconds, 4), "exact": bool(body.exact),
                             "speedup_vs_sequential": round(base / seconds, 2) if base else None})  # fmt: skip
    return rows


def plot(payload: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "build_s", "build U"), (axes[1], "forward_backward_s", "build U + backward")):
        for method in dict.fromkeys(r["method"] for r in payload["results"]):
            picked = [r for r in payload["results"] if r["method"] == method]
            style = "--" if method == "givens sequential" else "-"
            ax.plot([r["n"] for r in picked], [r[key] for r in picked], style, marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel("seconds")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.suptitle("orthogonal n x n matrices on this CPU (sequential Givens above n=256: extrapolated)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 16, 32 only (what CI runs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sequences", action="store_true", help="only the shipped sequence models' solvers")
    args = parser.parse_args(argv)
    if args.sequences:
        seq = sequences()
        found: dict[str, Any] = {"benchmark": "orthogonal-sequences", "environment": environment("cpu"),
                                 "results": seq}  # fmt: skip
        print(f"wrote {write_json('orthogonal-sequences-cpu', found, args.out)}")
        for r in seq:
            print(r)
        return found
    cfg = (
        OrthogonalConfig(sizes=(16, 32), repeats=1, naive_full_max=16, naive_prefix=100)
        if args.quick
        else OrthogonalConfig()
    )
    progress = tqdm(total=len(cfg.sizes) * (6 if geotorch_map() else 5), desc="orthogonal", unit="run")
    rows = measure(cfg, progress)
    progress.close()
    suffix = "-quick" if args.quick else ""
    payload: dict[str, Any] = {"benchmark": "orthogonal", "config": asdict(cfg), "environment": environment("cpu"),
               "results": rows, "ratios": ratios(rows)}  # fmt: skip
    path = write_json(f"orthogonal{suffix}-cpu", payload, args.out)
    print(f"wrote {path} and {plot(payload, args.out / f'orthogonal{suffix}-cpu.png')}")
    for r in payload["ratios"]:
        print(r)
    return payload


if __name__ == "__main__":
    main()
