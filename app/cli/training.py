"""``parafeed train``, ``eval``, ``publish`` and ``images``: models and data, through ``models``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from app.cli.common import print_json, relaunch_under_torchrun, settings, under_torchrun


def train(args: argparse.Namespace) -> int:
    from models.training import TrainConfig, train

    if args.ddg is not None and args.ddg < 1:
        raise ValueError(f"--ddg needs at least 1 module; got {args.ddg}")
    if args.ddg is not None and args.kind != "densenet":
        raise ValueError(f"--ddg trains the densenet family; got {args.kind}")
    if args.ddg is not None and args.ddg > 1 and not under_torchrun():
        return relaunch_under_torchrun(args.ddg)
    config = settings(args)
    overrides = json.loads(args.model) if args.model else {}
    cfg = TrainConfig(kind=args.kind, out=args.out or Path("runs") / args.kind, data=config.data, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=config.device,
                      time_budget=args.time_budget, limit=args.limit, resume=args.resume, model=overrides)  # fmt: skip
    if args.ddg is not None:
        from models.ddg import train_ddg

        summary = train_ddg(cfg, args.ddg)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # rank 0 reports (and publishes)
    else:
        summary = train(cfg)
    if args.publish:
        from models.registry import publish

        command = "parafeed " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        entry = publish(Path(cfg.out) / "best.safetensors", args.publish, config.registry, train_command=command,
                        train_seconds=summary["seconds"], data=config.data)  # fmt: skip
        summary["published"] = {"name": entry.name, "eval": entry.eval}
    print_json(summary)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from models.registry import evaluate

    config = settings(args)
    start = time.perf_counter()
    figures = evaluate(args.model, config.registry, config.data, args.limit)
    if args.json:
        print_json(figures)
    else:
        for key, value in figures.items():
            print(f"{key:>40}: {value}")
        print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def publish(args: argparse.Namespace) -> int:
    from models.registry import publish

    config = settings(args)
    entry = publish(args.checkpoint, args.name, config.registry, args.train_command, args.train_seconds,
                    data=config.data)  # fmt: skip
    print_json({"name": entry.name, "sha256": entry.sha256, "eval": entry.eval, "eval_slice": entry.eval_slice})
    return 0


def images(args: argparse.Namespace) -> int:
    import torch

    from models import data as datasets
    from models.pictures import save_grid

    split = datasets.load_split(args.split, settings(args).data)
    picked = split.images[: args.n]
    if args.binarize:
        picked = (picked > 127).to(torch.uint8) * 255
    print(save_grid(picked, args.out))
    return 0
