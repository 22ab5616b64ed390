"""Decoupled parallel backprop (DDG, Huo et al., ICML 2018; ``models.ddg``) against ordinary backprop.

The same DenseNet-BC (the shipped configuration), the same data order, augmentation draws and epochs, trained:
- ``backprop``: ``parafeed train densenet``, one process with every core's thread;
- ``ddg K``: ``parafeed train densenet --ddg K``, K processes (torchrun, gloo) with cores / K threads each, the
  network cut into K modules of equal multiply-adds; run only where the machine has at least K cores;
- ``gpipe 2``: the exact pipeline instead (``benchmarks.gpipe``: ``torch.distributed.pipelining``, 4 micro-batches,
  the same modules, ranks and threads).
Each epoch is its own invocation (``--resume``), so after every epoch the checkpoint is evaluated on the first
``--test`` test images. Reported per epoch: training wall time (from ``metrics.jsonl``, validation excluded),
test accuracy; and the depth of one iteration in module-steps: backprop runs K forwards then K backwards in turn
(2K), DDG runs every module's forward and (delayed) backward at once (2, when the modules are balanced).

Anchor (published, not ours): DDG on ResNet-110 / CIFAR-10, 4 GPUs: about 1.9x faster than backprop at the same
final accuracy (Huo et al. 2018). DDG is not exact: its trajectory differs from backprop's.

    python -m benchmarks.ddg [--quick] [--epochs 3] [--limit 6400] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.gpipe import MICROBATCHES
from benchmarks.harness import RESULTS, environment, save_figure, write_json

ANCHOR = "Huo et al. 2018: ResNet-110 on CIFAR-10, 4 GPUs, DDG about 1.9x faster than backprop, same accuracy"


@dataclass
class Run:
    method: str  # "backprop" or "ddg K"
    modules: int
    epoch_seconds: list[float] = field(default_factory=list)  # training wall time of each epoch
    test_accuracy: list[float] = field(default_factory=list)  # after each epoch
    depth_per_iteration: float = 0  # module-steps on one iteration's critical path (backprop 2K, DDG 2, GPipe)


def train_epochs(method: str, modules: int, args: argparse.Namespace, out: Path) -> Run:
    """Train ``args.epochs`` epochs one invocation at a time (``method``: backprop, ddg or gpipe), evaluating after
    each."""
    from models.checkpoint import load_tensors, read_metadata
    from models.data import load_split
    from models.registry import build_from
    from models.tasks import get_task

    images, labels = get_task("densenet").prepare(load_split("test").subset(slice(0, args.test)))
    run = Run(method if modules == 1 else f"{method} {modules}", modules, depth_per_iteration=2 * modules)
    if method == "ddg":
        run.depth_per_iteration = 2  # every module's forward and backward at once
    if method == "gpipe":  # M micro-batches through K stages: 2 (M + K - 1) micro-steps of 1/M module-step each
        run.depth_per_iteration = round(2 * (MICROBATCHES + modules - 1) / MICROBATCHES, 2)
    state = out / ("last.safetensors" if modules == 1 else "last-rank0.safetensors")
    for epoch in range(1, args.epochs + 1):
        common = ["--epochs", str(epoch), "--limit", str(args.limit), "--out", str(out)]
        common += ["--resume"] if epoch > 1 else []
        if method == "gpipe":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={modules}",
                       "-m", "benchmarks.gpipe", *common]  # fmt: skip
        else:
            command = [sys.executable, "-m", "app.cli", "train", "densenet", "--seed", "0", *common]
            command += ["--ddg", str(modules)] if method == "ddg" else []
        subprocess.run(command, check=True, capture_output=True, timeout=3600)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        run.epoch_seconds.append([r for r in records if r["event"] == "epoch"][-1]["train_seconds"])
        meta = read_metadata(state)
        model, _ = build_from(meta["kind"], meta["config"])
        weights = {k.removeprefix("model/"): v for k, v in load_tensors(state).items() if k.startswith("model/")}
        model.load_state_dict(weights)
        run.test_accuracy.append(accuracy(model.eval(), images, labels))
        print(f"{run.method} epoch {epoch}: {run.epoch_seconds[-1]:.1f} s, test accuracy {run.test_accuracy[-1]:.4f}")
    return run


def accuracy(model: Any, images: Any, labels: Any) -> float:
    """Test accuracy by the textbook forward (``DenseNet.concat_forward``: the fast sequential one; its logits equal
    the served forward's to float32 rounding)."""
    import torch

    with torch.no_grad():
        correct = sum(int((model.concat_forward(x).argmax(1) == y).sum()) for x, y in
                      zip(images.split(500), labels.split(500), strict=True))  # fmt: skip
    return round(correct / len(labels), 4)


def plot(runs: list[Run], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        epochs = range(1, len(run.epoch_seconds) + 1)
        left.plot(epochs, run.epoch_seconds, "o-", label=run.method)
        right.plot(epochs, [100 * a for a in run.test_accuracy], "o-", label=run.method)
    left.set(xlabel="epoch", ylabel="training wall time per epoch (s)", title="Time (2-core CPU)")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="Accuracy after each epoch")
    for ax in (left, right):
        ax.set_xticks(range(1, max(len(run.epoch_seconds) for run in runs) + 1))
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 epochs of 1280 images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=6400, help="training images per epoch")
    parser.add_argument("--test", type=int, default=2000, help="test images evaluated after each epoch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.limit, args.test = 2, 1280, 500
    cores = os.cpu_count() or 1
    plan = [("backprop", 1), ("ddg", 2), ("gpipe", 2)] + ([("ddg", 4)] if cores >= 4 else [])
    runs = []
    started = time.perf_counter()
    for method, modules in plan:
        with TemporaryDirectory() as tmp:
            runs.append(train_epochs(method, modules, args, Path(tmp)))
    base = runs[0]
    base.depth_per_iteration = 2 * max(modules for _, modules in plan)  # K forwards, then K backwards, in turn
    payload: dict[str, Any] = {
        "environment": environment(),
        "settings": {"epochs": args.epochs, "limit": args.limit, "test_images": args.test, "model": "densenet"},
        "runs": [asdict(run) for run in runs],
        "ratios": {run.method: round(sum(run.epoch_seconds) / sum(base.epoch_seconds), 3) for run in runs[1:]},
        "accuracy_gap_points": {
            run.method: round(100 * (run.test_accuracy[-1] - base.test_accuracy[-1]), 2) for run in runs[1:]
        },
        "skipped": [] if cores >= 4 else [f"ddg 4: {cores} cores; 4 processes would share them and measure contention"],
        "anchor": ANCHOR,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    print(write_json("ddg-cpu", payload, args.out))
    print(plot(runs, args.out / "ddg-cpu.png"))


if __name__ == "__main__":
    main()
