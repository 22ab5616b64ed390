"""Run by ``torchrun --nproc-per-node 2`` from ``tests/solvers/test_mgrit_dist.py``: distributed MGRIT on the test
chains, compared on every rank with single-process MGRIT; rank 0 writes what it found as JSON to argv[1]."""

import json
import sys

import torch
import torch.distributed as dist

from solvers.mgrit import MGRITConfig, mgrit, sequential_chain
from solvers.mgrit_dist import mgrit_distributed
from tests.solvers.test_mgrit import integer_chain, tanh_chain


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    cases = []
    for name, steps, step, u0 in [
        ("integer", 61, integer_chain(61, 2), torch.tensor([[3], [700]])),
        ("tanh", 90, tanh_chain(90, 3, 4, seed=1), torch.zeros(3, 4, dtype=torch.float64)),
    ]:
        for relax, levels, m in [("F", 2, 4), ("FCF", 2, 3), ("FCF", 3, 4)]:
            cfg = MGRITConfig(coarsening=m, levels=levels, relax=relax)
            one, many = mgrit(step, u0, steps, cfg), mgrit_distributed(step, u0, steps, cfg)
            cases.append({
                "case": f"{name} {relax} L={levels} m={m}", "exact": many.exact, "iterations": many.iterations,
                "same_iterations": one.iterations == many.iterations, "same_residuals": one.residuals == many.residuals,
                "same_states": torch.equal(one.states, many.states), "same_depth": one.depth == many.depth,
                "serial": torch.equal(many.states, sequential_chain(step, u0, steps)),
                "same_fine_work": one.fine_evaluations == many.fine_evaluations,
            })  # fmt: skip
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump({"ranks": dist.get_world_size(), "cases": cases}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
