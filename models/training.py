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
    return Training(cfg).run()


class Training:
    """One training run: its data, model, optimizer, progress (resumable) and metrics log."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.task = cfg, get_task(cfg.kind)
        defaults = self.defaults = self.task.defaults
        self.epochs = cfg.epochs or defaults.epochs
        self.batch_size = cfg.batch_size or defaults.batch_size
        self.lr = cfg.lr or defaults.lr
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        train_split, val_split = datasets.train_validation(cfg.data, cfg.validation, cfg.seed)
        if cfg.limit is not None:
            train_split = train_split.subset(slice(0, cfg.limit))
            val_split = val_split.subset(slice(0, max(cfg.limit // 10, self.batch_size)))
        self.config: Any = config_from_dict(self.task.config_cls, {**defaults.model, **cfg.model})
        self.train_tensors = self.task.prepare(train_split, self.config)
        self.val_tensors = self.task.prepare(val_split, self.config)
        self.model = self.task.build(self.config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=defaults.weight_decay)
        self.out = out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        self.progress: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "steps": 0, "seconds": 0.0, "best_val": None}
        self.progress["bad_epochs"] = 0
        if cfg.resume and self.last_path.exists():
            self.progress = progress = load_training_state(self.model, self.optimizer, self.last_path)
            print(f"resumed from {self.last_path} at epoch {progress['epoch']}, step {progress['steps']}")
        self.log = (out / "metrics.jsonl").open("a")
        self.epoch_seconds = 0.0  # wall time of the last epoch's training steps (validation excluded)

    @property
    def last_path(self) -> Path:
        """The resumable state's file."""
        return Path(self.cfg.out) / "last.safetensors"

    @property
    def extra(self) -> dict[str, Any]:
        """What the best checkpoint records about how it was trained (beside epoch, loss and steps)."""
        return {}

    def write(self, record: dict[str, Any]) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def save_state(self) -> None:
        save_training_state(self.model, self.optimizer, self.cfg.kind, self.config, self.progress,
                            self.last_path)  # fmt: skip
        self.last_save = time.perf_counter()

    def run(self) -> dict[str, Any]:
        cfg, progress = self.cfg, self.progress
        given = asdict(replace(cfg, out=str(self.out)))  # type: ignore[arg-type]
        settings = {**given, "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        self.write({"event": "start", "settings": settings, "config": asdict(self.config), "device": str(self.device)})
        self.start, self.last_save = time.perf_counter() - progress["seconds"], time.perf_counter()
        stopped = "epochs"
        while progress["epoch"] < self.epochs:
            epoch = progress["epoch"]
            started = time.perf_counter()
            running, finished = self.steps(epoch)
            self.epoch_seconds = time.perf_counter() - started
            self.validate(epoch, running)
            if not finished:
                stopped = "time_budget"
                break
            progress.update(epoch=epoch + 1, step_in_epoch=0)
            self.save_state()
            if self.defaults.patience is not None and progress["bad_epochs"] >= self.defaults.patience:
                stopped = "early_stopping"
                break
        self.save_state()
        summary = {"event": "end", "stopped": stopped, "best_val": progress["best_val"], "steps": progress["steps"]}
        summary["seconds"] = round(progress["seconds"], 1)
        self.write(summary)
        self.log.close()
        return summary

    def start_epoch(self, epoch: int) -> tuple[torch.Tensor, int]:
        """Set epoch ``epoch``'s learning rate; its example order (a pure function of seed and epoch) and steps."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * self.defaults.lr_decay**epoch
        n = self.train_tensors[0].shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        return order, math.ceil(n / self.batch_size)

    def batch_at(self, order: torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """The training tensors of mini-batch ``step`` of an epoch's ``order``, on the device."""
        index = order[step * self.batch_size : (step + 1) * self.batch_size]
        return tuple(t[index].to(self.device) for t in self.train_tensors)

    def count_step(self, step: int) -> None:
        """Mini-batch ``step`` of the epoch is done: the resumable progress and the training time move on."""
        self.progress.update(step_in_epoch=step + 1, steps=self.progress["steps"] + 1)
        self.progress["seconds"] = time.perf_counter() - self.start

    def steps(self, epoch: int) -> tuple[float, bool]:
        """The rest of one epoch: (smoothed training loss, False if the time budget ran out)."""
        cfg, progress, model, optimizer = self.cfg, self.progress, self.model, self.optimizer
        order, steps_per_epoch = self.start_epoch(epoch)
        bar = tqdm(total=steps_per_epoch, initial=progress["step_in_epoch"], desc=f"{cfg.kind} epoch {epoch + 1}")
        model.train()
        running, finished = 0.0, True
        for step in range(progress["step_in_epoch"], steps_per_epoch):
            batch = self.batch_at(order, step)
            loss = self.task.loss(model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if self.defaults.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.defaults.grad_clip)
            optimizer.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            self.count_step(step)
            bar.update()
            bar.set_postfix(loss=f"{running:.4f}")
            if time.perf_counter() - self.last_save > cfg.checkpoint_every:
                self.save_state()
            if cfg.time_budget is not None and progress["seconds"] > cfg.time_budget:
                finished = False
                break
        bar.close()
        return running, finished

    def validate(self, epoch: int, running: float) -> None:
        """Validation loss after an epoch; the best model so far goes to best.safetensors."""
        model, progress = self.model, self.progress
        model.eval()
        val = mean_over(lambda b: self.task.loss(model, b), self.val_tensors, self.task.eval_batch_size, self.device)
        improved = progress["best_val"] is None or val < progress["best_val"]
        if improved:
            progress["best_val"], progress["bad_epochs"] = val, 0
            extra = {"epoch": epoch + 1, "val_loss": val, "steps": progress["steps"], **self.extra}
            save_model(model, self.cfg.kind, self.config, self.out / "best.safetensors", extra=extra)
        else:
            progress["bad_epochs"] += 1
        record = {"event": "epoch", "epoch": epoch + 1, "train_loss": running, "val_loss": val,
                  "train_seconds": round(self.epoch_seconds, 2)}  # fmt: skip
        self.write({**record, "steps": progress["steps"], "seconds": round(progress["seconds"], 1), "best": improved})
        print(f"epoch {epoch + 1}: train {running:.4f}  val {val:.4f}{'  (best)' if improved else ''}")
