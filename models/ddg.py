"""Decoupled parallel backpropagation with delayed gradients, DDG (Huo, Gu, Yang, Huang, ICML 2018, arXiv
1804.10574): ``parafeed train densenet --ddg K``.

The network's chain of units (``DenseNet.units``: stem, dense layers, transitions, head) is cut into K contiguous
modules of about equal multiply-adds (cuts may fall between two dense layers of a block: at block boundaries alone
the first block holds ~3/4 of the work). Module k (0-based) runs on rank k of a ``torch.distributed`` group.

Schedule (the paper's Algorithm 1), iteration t on rank k:
  - forward: receive h_{k-1}^t from rank k-1 (rank 0: the mini-batch x^t), compute h_k^t with the current
    weights w_k^t, keep the graph, send h_k^t to rank k+1;
  - backward: with the error gradient delta_k^{t-d_k} that rank k+1 sent at its iteration t-1, the delay being
    d_k = K-1-k, backpropagate through the graph kept from iteration t-d_k (the stored activations and the weights
    w_k^{t-d_k} they were computed with), send the error at its input to rank k-1, and update w_k with that
    gradient. The last module (d = 0) uses its own loss at once. All sends and receives are non-blocking.
  - warm-up: module k makes no update in its first d_k iterations of a pass (the pipeline fills); at the end of an
    epoch, or a clean stop, the pipeline drains: the kept graphs receive their errors and are applied (so
    checkpoints hold no gradient in flight, and every mini-batch updates every module exactly once).
  - learning rate: the family's optimizer and schedule (DenseNet: AdamW, lr decayed per epoch), unchanged, so that
    K = 1 is ordinary backpropagation bit for bit (same data order, augmentation draws and arithmetic). The paper
    uses SGD with momentum and step decay; its convergence result (delayed gradients, bounded delay K-1) is for
    SGD.
DDG changes the trajectory (module k steps with gradients d_k iterations stale), so it is not exact: the published
checkpoint records ``{"training": {"method": "ddg", "modules": K, "exact_backprop": false}}``.

Checkpoints: every rank writes its own resumable state (``last-rank{k}.safetensors``, all weights and its
optimizer) at epoch ends and on a clean stop; ``--resume`` restarts each rank from its file. After every epoch the
modules' weights are merged on every rank (a broadcast per tensor from its owner) and rank 0 validates and keeps
``best.safetensors``, a whole ordinary DenseNet checkpoint. A rank that dies ends the run: torchrun stops the rest.

Shapes: activations (b, C, H, W) at the cut, b the step's batch size; ``PARAFEED_DDG_FAIL_AT`` (tests only): the
last rank exits with status 3 before global step N, to check that a dead worker ends the run and ``--resume``
continues it.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from models.ddg_pipeline import Pipeline, Stage
from models.densenet import DenseNet, Unit
from models.devices import resolve_device
from models.training import TrainConfig, Training

FAIL_AT = "PARAFEED_DDG_FAIL_AT"


def partition(costs: list[float], modules: int) -> list[tuple[int, int]]:
    """Cut ``costs`` into ``modules`` contiguous non-empty ranges minimizing the largest sum (exact, by DP)."""
    n = len(costs)
    if not 1 <= modules <= n:
        raise ValueError(f"cannot cut {n} units into {modules} modules")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    best = [[math.inf] * (n + 1) for _ in range(modules + 1)]
    cut = [[0] * (n + 1) for _ in range(modules + 1)]
    best[0][0] = 0.0
    for m in range(1, modules + 1):
        for end in range(m, n + 1):
            for start in range(m - 1, end):
                value = max(best[m - 1][start], prefix[end] - prefix[start])
                if value < best[m][end]:
                    best[m][end], cut[m][end] = value, start
    ranges, end = [], n
    for m in range(modules, 0, -1):
        ranges.append((cut[m][end], end))
        end = cut[m][end]
    return ranges[::-1]


class DecoupledTraining(Training):
    """``Training`` with the steps of one epoch run as DDG module ``rank`` of ``modules`` (see the module doc)."""

    def __init__(self, cfg: TrainConfig, modules: int) -> None:
        self.modules = modules
        self.rank = dist.get_rank() if modules > 1 else 0
        super().__init__(cfg)
        if not isinstance(self.model, DenseNet):
            raise ValueError(f"--ddg trains the densenet family; got {cfg.kind}")
        self.net: DenseNet = self.model
        self.units = units = self.net.units()
        self.ranges = partition([u.cost for u in units], modules)
        self.first, self.last = self.ranges[self.rank]
        self.shapes = self._cut_shapes(units)
        self.owned: list[Unit] = units[self.first : self.last]
        self.params = {name: p for name, p in self.model.named_parameters()}
        owned_keys = {key for unit in self.owned for key, _ in unit.state}
        self.mine = [name for name in self.params if name in owned_keys]
        self._check_same_start()

    def _check_same_start(self) -> None:
        """Every rank resumes from the same step (a missing or older per-rank file would desynchronize the pipeline:
        refuse to start instead)."""
        if self.modules == 1:
            return
        steps = torch.tensor([float(self.progress["steps"]), -float(self.progress["steps"])], device=self.device)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
        if steps[0] != -steps[1]:
            low, high = -int(steps[1]), int(steps[0])
            raise ValueError(f"the ranks' resumable states disagree (steps {low} to {high}); restore the "
                             "last-rank*.safetensors files of one epoch or start without --resume")  # fmt: skip

    # -- files and records ---------------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        name = "last.safetensors" if self.modules == 1 else f"last-rank{self.rank}.safetensors"
        return Path(self.cfg.out) / name

    @property
    def extra(self) -> dict[str, Any]:
        names = [unit.name for unit in self.units]
        cuts = [[names[a], names[b - 1]] for a, b in self.ranges]
        return {"training": {"method": "ddg", "modules": self.modules, "exact_backprop": self.modules == 1,
                             "modules_units": cuts}}  # fmt: skip

    def write(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            super().write(record)

    def _cut_shapes(self, units: list[Unit]) -> list[tuple[int, ...]]:
        """(C, H, W) of the activation entering each module (an eval-mode pass of one blank image)."""
        x, shapes = torch.zeros(1, *self.train_tensors[0].shape[1:], device=self.device), []
        self.model.eval()
        with torch.no_grad():
            for a, b in self.ranges:
                shapes.append(tuple(x.shape[1:]))
                for unit in units[a:b]:
                    x = unit.fn(x)
        self.model.train()
        return shapes

    # -- one module's forward and delayed backward ---------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This module on x with a snapshot of its weights (the graph keeps w^t while w moves on)."""
        snapshot = {name: self.params[name].detach().clone().requires_grad_(True) for name in self.mine}
        out = torch.func.functional_call(self.model, snapshot, (x,), {"units": (self.first, self.last)})
        return out, snapshot

    def _apply(self, snapshot: dict[str, torch.Tensor]) -> None:
        """One optimizer step with the gradients that reached the snapshot (the delayed gradient)."""
        for name, copy in snapshot.items():
            self.params[name].grad = copy.grad
        if self.defaults.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([self.params[n] for n in self.mine], self.defaults.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def steps(self, epoch: int) -> tuple[float, bool]:
        """The rest of one epoch through the pipeline, then its drain: (smoothed loss on the last rank, finished)."""
        cfg, progress, k = self.cfg, self.progress, self.rank
        order, steps_per_epoch = self.start_epoch(epoch)
        bar = tqdm(total=steps_per_epoch, initial=progress["step_in_epoch"], desc=f"{cfg.kind} DDG epoch {epoch + 1}",
                   disable=k != 0)  # fmt: skip
        pipeline = Pipeline(Stage(self._forward, self._apply), k, self.modules, self.device)
        task: Any = self.task  # DenseNetTask: augment and criterion
        running, finished, fail_at = 0.0, True, int(os.environ.get(FAIL_AT, "-1"))
        for step in range(progress["step_in_epoch"], steps_per_epoch):
            if k == self.modules - 1 and progress["steps"] == fail_at:
                print(f"{FAIL_AT}: rank {k} exits before step {fail_at}", file=sys.stderr)
                sys.exit(3)
            images, labels = self.batch_at(order, step)
            loss = pipeline.step(partial(task.augment, images), (len(labels), *self.shapes[k]),
                                 partial(self._loss, labels))  # fmt: skip
            if loss is not None:
                running = 0.98 * running + 0.02 * loss if step else loss
                bar.set_postfix(loss=f"{running:.4f}")
            self.count_step(step)
            bar.update()
            if cfg.time_budget is not None and self._agree(progress["seconds"] > cfg.time_budget):
                finished = False
                break
        pipeline.drain()
        bar.close()
        return running, finished

    def _loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        task: Any = self.task
        return task.criterion(logits, labels).mean()

    def _agree(self, stop: bool) -> bool:
        """Whether any rank wants to stop (one small all-reduce, so every rank stops after the same step)."""
        if self.modules == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)  # nccl reduces only device tensors
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -- after each epoch: every rank gets every module, rank 0 validates ------------------------------------------
    def merge(self) -> None:
        """Every rank's owned weights and BN statistics onto every rank (a broadcast per tensor from its owner)."""
        if self.modules == 1:
            return
        state = self.model.state_dict()
        for owner, (a, b) in enumerate(self.ranges):
            for unit in self.units[a:b]:
                for key, index in unit.state:
                    tensor = state[key]
                    part = (tensor if index is None else tensor[index]).clone()
                    dist.broadcast(part, owner)
                    with torch.no_grad():
                        (tensor if index is None else tensor[index]).copy_(part)

    def validate(self, epoch: int, running: float) -> None:
        self.merge()
        if self.modules > 1:
            dist.broadcast(
                loss := torch.tensor([running], device=self.device), self.modules - 1
            )  # the loss is known on the last rank
            running = float(loss.item())
        if self.rank == 0:
            super().validate(epoch, running)
        if self.modules > 1:
            best = torch.tensor(
                [self.progress["best_val"] or 0.0, float(self.progress["bad_epochs"])],
                dtype=torch.float64, device=self.device,
            )  # fmt: skip
            dist.broadcast(best, 0)
            if self.rank != 0:
                self.progress["best_val"], self.progress["bad_epochs"] = float(best[0]), int(best[1])
        self.model.train()


def train_ddg(cfg: TrainConfig, modules: int) -> dict[str, Any]:
    """Train with DDG as this process's module (``torchrun`` sets RANK/WORLD_SIZE; K = 1 runs in-process)."""
    if modules > 1:
        cuda = resolve_device(cfg.device).type == "cuda"
        if cuda:  # one GPU per process
            cfg = replace(cfg, device=f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        dist.init_process_group("nccl" if cuda else "gloo")
        if dist.get_world_size() != modules:
            raise ValueError(f"--ddg {modules} needs {modules} processes; torchrun started {dist.get_world_size()}")
        here = int(os.environ.get("LOCAL_WORLD_SIZE", modules))  # processes on this machine (torchrun sets it)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // here))  # a fair share of this machine's cores each
    try:
        return DecoupledTraining(cfg, modules).run()
    finally:
        if modules > 1:
            dist.destroy_process_group()
