"""The exact pipeline users would reach for instead of DDG: GPipe (Huang et al., NeurIPS 2019) through
``torch.distributed.pipelining`` (``ScheduleGPipe``), for ``benchmarks/ddg.py``.

The same DenseNet, cut into the same modules as DDG (``models.ddg.partition`` of ``DenseNet.units``), one rank
each; every mini-batch is split into ``MICROBATCHES`` micro-batches that flow forward through the stages, then
backward, and every stage steps once per mini-batch with the gradient of the whole mini-batch: synchronous
gradients, no staleness (batch-norm statistics are per micro-batch, so it is backprop up to that). Everything else
(data order, augmentation draws, AdamW and its schedule, checkpoints, merge and validation after each epoch,
``metrics.jsonl``) is ``models.ddg.DecoupledTraining``'s, so the two differ only in the schedule (and this
baseline ignores ``time_budget``).

    torchrun --standalone --nproc-per-node 2 -m benchmarks.gpipe --out DIR [--epochs E] [--limit N] [--resume]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

from models.ddg import DecoupledTraining
from models.densenet import DenseNet
from models.training import TrainConfig

MICROBATCHES = 4


class Segment(nn.Module):
    """Units [first, last) of a DenseNet as a module (its parameters are the whole network's; only its own get
    gradients)."""

    def __init__(self, net: DenseNet, first: int, last: int) -> None:
        super().__init__()
        self.net, self.first, self.last = net, first, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, units=(self.first, self.last))


class GPipeTraining(DecoupledTraining):
    """``DecoupledTraining`` with the epoch's steps run by ``ScheduleGPipe`` instead of the DDG schedule."""

    @property
    def extra(self) -> dict[str, Any]:
        return {"training": {"method": "gpipe", "modules": self.modules, "microbatches": MICROBATCHES}}

    def steps(self, epoch: int) -> tuple[float, bool]:
        progress, k = self.progress, self.rank
        order, steps_per_epoch = self.start_epoch(epoch)
        task: Any = self.task
        stage = PipelineStage(Segment(self.net, self.first, self.last), k, self.modules, torch.device(self.device))
        schedule = ScheduleGPipe(stage, MICROBATCHES, loss_fn=lambda out, y: task.criterion(out, y).mean())
        running = 0.0
        for step in range(progress["step_in_epoch"], steps_per_epoch):
            images, labels = self.batch_at(order, step)
            losses: list[torch.Tensor] = []
            if k == 0:
                schedule.step(task.augment(images))
            elif k == self.modules - 1:
                schedule.step(target=labels, losses=losses)
                loss = float(torch.stack(losses).mean())
                running = 0.98 * running + 0.02 * loss if step else loss
            else:
                schedule.step()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.count_step(step)
        return running, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.get_world_size()))
    try:
        cfg = TrainConfig(kind="densenet", out=args.out, epochs=args.epochs, limit=args.limit, resume=args.resume)
        GPipeTraining(cfg, dist.get_world_size()).run()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
