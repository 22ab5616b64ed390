"""The training loop shared by every model family (``parafeed train KIND``).

Guarantees: a run is reproducible from its seed (the data order of epoch e is a pure function of (seed, e));
``--resume`` continues exactly where the last checkpoint left off, mid-epoch included; a crash loses at most
``checkpoint_every`` seconds of work (checkpoints are written atomically); the best model by validation loss is
kept in ``best.safetensors``; a time budget stops cleanly after the current step. Metrics go to
``metrics.jsonl``, one JSON object per line.

Files in ``out``: best.safetensors (weights + config), last.safetensors (resumable state), metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from models import data as datasets
from models.checkpoint import config_from_dict, load_training_state, save_model, save_training_state
from models.devices import resolve_device
from models.tasks import get_task, mean_over


@dataclass(frozen=True)
class TrainConfig:
    kind: str  # model family: see models.tasks.TASKS
    out: Path = Path("runs/train")  # where checkpoints and metrics go
    data: str | None = None  # IDX directory; None: PARAFEED_DATA, then the Debian package location
    epochs: int | None = None  # None: the family's default (models.tasks)
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    time_budget: float | None = None  # seconds of training before a clean stop; None: no limit
    checkpoint_every: float = 60.0  # seconds between resumable checkpoints
    validation: int = 5000  # examples of the training set held out for early stopping
    limit: int | None = None  # use only the first N training examples (tests, quick runs)
    resume: bool = False
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model config


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model; returns a summary (also the last line of metrics.jsonl)."""
    task = get_task(cfg.kind)
    defaults = task.defaults
    epochs = cfg.epochs or defaults.epochs
    batch_size = cfg.batch_size or defaults.batch_size
    lr = cfg.lr or defaults.lr
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    train_split, val_split = datasets.train_validation(cfg.data, cfg.validation, cfg.seed)
    if cfg.limit is not None:
        train_split = train_split.subset(slice(0, cfg.limit))
        val_split = val_split.subset(slice(0, max(cfg.limit // 10, batch_size)))
    config: Any = config_from_dict(task.config_cls, {**defaults.model, **cfg.model})
    train_tensors, val_tensors = task.prepare(train_split, config), task.prepare(val_split, config)
    model = task.build(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=defaults.weight_decay)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    progress: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "steps": 0, "seconds": 0.0, "best_val": None}
    progress["bad_epochs"] = 0
    if cfg.resume and (out / "last.safetensors").exists():
        progress = load_training_state(model, optimizer, out / "last.safetensors")
        print(f"resumed from {out / 'last.safetensors'} at epoch {progress['epoch']}, step {progress['steps']}")
    log = (out / "metrics.jsonl").open("a")
    settings = {**asdict(replace(cfg, out=str(out))), "epochs": epochs, "batch_size": batch_size, "lr": lr}  # type: ignore[arg-type]

    def write(record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    write({"event": "start", "settings": settings, "config": asdict(config), "device": str(device)})
    start, last_save = time.perf_counter() - progress["seconds"], time.perf_counter()
    n = train_tensors[0].shape[0]
    stopped = "epochs"
    while progress["epoch"] < epochs:
        epoch = progress["epoch"]
        for group in optimizer.param_groups:
            group["lr"] = lr * defaults.lr_decay**epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        steps_per_epoch = math.ceil(n / batch_size)
        bar = tqdm(total=steps_per_epoch, initial=progress["step_in_epoch"], desc=f"{cfg.kind} epoch {epoch + 1}")
        model.train()
        running = 0.0
        for step in range(progress["step_in_epoch"], steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            batch = tuple(t[index].to(device) for t in train_tensors)
            loss = task.loss(model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if defaults.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), defaults.grad_clip)
            optimizer.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            progress.update(step_in_epoch=step + 1, steps=progress["steps"] + 1)
            progress["seconds"] = time.perf_counter() - start
            bar.update()
            bar.set_postfix(loss=f"{running:.4f}")
            if time.perf_counter() - last_save > cfg.checkpoint_every:
                save_training_state(model, optimizer, cfg.kind, config, progress, out / "last.safetensors")
                last_save = time.perf_counter()
            if cfg.time_budget is not None and progress["seconds"] > cfg.time_budget:
                stopped = "time_budget"
                break
        bar.close()
        model.eval()
        val = mean_over(lambda b: task.loss(model, b), val_tensors, task.eval_batch_size, device)
        improved = progress["best_val"] is None or val < progress["best_val"]
        if improved:
            progress["best_val"], progress["bad_epochs"] = val, 0
            extra = {"epoch": epoch + 1, "val_loss": val, "steps": progress["steps"]}
            save_model(model, cfg.kind, config, out / "best.safetensors", extra=extra)
        else:
            progress["bad_epochs"] += 1
        record = {"event": "epoch", "epoch": epoch + 1, "train_loss": running, "val_loss": val}
        write({**record, "steps": progress["steps"], "seconds": round(progress["seconds"], 1), "best": improved})
        print(f"epoch {epoch + 1}: train {running:.4f}  val {val:.4f}{'  (best)' if improved else ''}")
        if stopped == "time_budget":
            break
        progress.update(epoch=epoch + 1, step_in_epoch=0)
        save_training_state(model, optimizer, cfg.kind, config, progress, out / "last.safetensors")
        last_save = time.perf_counter()
        if defaults.patience is not None and progress["bad_epochs"] >= defaults.patience:
            stopped = "early_stopping"
            break
    save_training_state(model, optimizer, cfg.kind, config, progress, out / "last.safetensors")
    summary = {"event": "end", "stopped": stopped, "best_val": progress["best_val"], "steps": progress["steps"]}
    summary["seconds"] = round(progress["seconds"], 1)
    write(summary)
    log.close()
    return summary
