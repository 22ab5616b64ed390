"""Train the example pixel transformer on Fashion-MNIST and register it in the plugin's checkpoint directory.

    python -m pixel_transformer.train [--epochs 3] [--out pixel_transformer/checkpoints] [--data DIR]

A few minutes per epoch on two CPU cores. Writes ``<name>.safetensors`` (weights, kind and config: parafeed's
checkpoint format, never pickle) and its entry in ``manifest.json``: config, test-set negative log-likelihood in
bits per dimension (uniform over 16 levels: 4 bits), the command and its wall time, and the SHA-256 parafeed checks
before loading. Uses parafeed's own data loaders and checkpoint writer.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from models import data as datasets
from models.checkpoint import config_to_dict, save_model, sha256
from models.registry import SLICE, Entry, read_manifest, write_manifest
from pixel_transformer.model import PixelTransformer, PixelTransformerConfig, images_to_levels

KIND = "pixel-transformer"
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def bits_per_dim(model: PixelTransformer, x: torch.Tensor, batch: int = 500) -> float:
    """Mean test NLL in bits per position, summed in float64."""
    total = 0.0
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            total += float(model.nll(x[start : start + batch]).double().sum())
    return total / x.shape[0] / x.shape[1] / math.log(2)


def independent_bits_per_dim(train: torch.Tensor, test: torch.Tensor, levels: int) -> float:
    """The baseline: each position's own level frequencies on the training set (add-one smoothing)."""
    counts = torch.stack([(train == k).sum(0) for k in range(levels)], dim=1).double() + 1  # (T, levels)
    log_p = (counts / counts.sum(1, keepdim=True)).log()
    return float(-log_p.gather(1, test.T).sum(0).mean()) / test.shape[1] / math.log(2)


def train(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)
    config = PixelTransformerConfig()
    train_split, _ = datasets.train_validation(args.data, validation=5000, seed=args.seed)
    x = images_to_levels(train_split.images, config)
    test = images_to_levels(datasets.load_split("test", args.data).images, config)
    model = PixelTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * (x.shape[0] // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    with tqdm(total=steps, desc="pixel-transformer", unit="step", disable=not sys.stderr.isatty()) as bar:
        for _epoch in range(args.epochs):
            order = torch.randperm(x.shape[0])
            for i in range(x.shape[0] // args.batch_size):
                batch = x[order[i * args.batch_size : (i + 1) * args.batch_size]]
                loss = model.nll(batch).mean() / batch.shape[1]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(bits_per_dim=f"{loss.item() / math.log(2):.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    figures = {"bits_per_dim": round(bits_per_dim(model, test), 5),
               "baseline_independent_bits_per_dim": round(independent_bits_per_dim(x, test, config.levels), 5),
               "uniform_bits_per_dim": math.log2(config.levels)}  # fmt: skip
    publish(model, config, args, seconds, figures, test)
    return {**figures, "seconds": round(seconds, 1)}


def publish(model: PixelTransformer, config: PixelTransformerConfig, args: argparse.Namespace, seconds: float,
            figures: dict[str, float], test: torch.Tensor) -> None:  # fmt: skip
    out = Path(args.out)
    path = out / f"{args.name}.safetensors"
    save_model(model, KIND, config, path)
    entries = read_manifest(out)
    entries[args.name] = Entry(
        name=args.name, kind=KIND, file=path.name, sha256=sha256(path), config=config_to_dict(config),
        description="causal transformer (2 blocks, width 64) over 14x14 Fashion-MNIST in 16 gray levels",
        train_command="python -m pixel_transformer.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        train_seconds=round(seconds, 1), eval={**figures, "examples": int(test.shape[0])},
        eval_slice={"bits_per_dim": round(bits_per_dim(model, test[:SLICE]), 5), "examples": SLICE},
    )  # fmt: skip
    write_manifest(entries, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="Fashion-MNIST IDX directory (default: Debian's dataset-fashion-mnist)")
    parser.add_argument("--out", type=Path, default=CHECKPOINTS, help="registry directory to publish into")
    parser.add_argument("--name", default="pixel-transformer-fmnist")
    print(train(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
