"""Run by ``torchrun --nproc-per-node 2`` from ``tests/models/test_ddg.py``: the DDG schedule (``models.ddg_pipeline``)
on y = w2 * (w1 * x), one scalar weight per rank, plain SGD; rank r writes its weight after every iteration (and
after the drain) as JSON to argv[1] + f".{r}"."""

import json
import sys

import torch
import torch.distributed as dist

from models.ddg_pipeline import Pipeline, Stage

XS, LR, START = [0.5, -1.0, 2.0, 0.25, 1.5], 0.1, [0.8, -0.6]


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    weight = torch.tensor(START[rank], dtype=torch.float32)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        used = weight.clone().requires_grad_(True)  # the weight this forward used, kept with its graph
        return used * x, used

    def apply(used: torch.Tensor) -> None:
        assert used.grad is not None
        weight.sub_(LR * used.grad)

    pipeline = Pipeline(Stage(forward, apply), rank, 2)
    history = []
    for x in XS:
        pipeline.step(lambda x=x: torch.tensor([x]), (1,), lambda y: ((y - 1.0) ** 2 / 2).sum())
        history.append(float(weight))
    pipeline.drain()
    history.append(float(weight))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(history, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
