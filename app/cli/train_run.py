"""``parafeed train-run``: a training run solved in parallel over its K optimizer steps by MGRIT (Schroder, arXiv
1708.02276), on one process or on ``--ranks N`` processes (``torchrun``, gloo; ``solvers.mgrit_dist``).

The run (``models.training_runs``) is a chain w_{k+1} = Phi_k(w_k) with a fixed mini-batch order, so serial
training has one trajectory; MGRIT converges to it (to the bit when it runs to termination, ``--tol 0``). The
report puts MGRIT's cycles, convergence factors and parallel depth (sequential optimizer-step evaluations on the
critical path, both levels) next to K, the depth of serial training, and the measured wall times of both: on a
machine with fewer cores than the chunks, the extra work of MGRIT shows in the wall time, and the report says so.

With ``--ranks N`` (N > 1) the command re-launches itself under ``torchrun --standalone --nproc-per-node N``; the
same command works under a multi-node ``torchrun`` (it then reads RANK/WORLD_SIZE from the environment). Rank 0
prints; every rank computes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import relaunch_under_torchrun, under_torchrun

if TYPE_CHECKING:
    from models.training_runs import RunConfig
    from solvers.mgrit import MGRITConfig


def add_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("problem", choices=["regression", "classification"])
    sub.add_argument("--steps", type=int, default=1024, help="K optimizer steps (default 1024)")
    sub.add_argument("--lr", type=float, default=0.002, help="learning rate (default 0.002)")
    sub.add_argument("--momentum", type=float, default=0.0, help="0: plain SGD (default); > 0: momentum SGD")
    sub.add_argument("--batch-size", type=int, default=16)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--coarse", choices=["frozen", "scaled"], default="scaled", help="coarse propagator")
    sub.add_argument("--coarsening", type=int, default=8, help="m: fine steps per coarse step (default 8)")
    sub.add_argument("--levels", type=int, default=3, help="2: two-level; more: V-cycles (default 3)")
    sub.add_argument("--relax", choices=["F", "FCF"], default="FCF")
    sub.add_argument("--tol", type=float, default=0.0, help="0: to termination, bitwise; > 0: residual tolerance")
    sub.add_argument("--max-cycles", type=int, help="cap on MGRIT cycles (default: enough to terminate)")
    sub.add_argument("--ranks", type=int, default=1, help="processes (torchrun, gloo) splitting the time chunks")
    sub.add_argument("--out", type=Path, help="also write the report as JSON here")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument("--data", help="Fashion-MNIST IDX directory (classification)")


def train_run(args: argparse.Namespace) -> int:
    if args.ranks < 1:
        raise ValueError(f"--ranks must be at least 1; got {args.ranks}")
    if args.ranks > math.ceil(args.steps / args.coarsening):
        raise ValueError(f"--ranks {args.ranks} exceeds the {math.ceil(args.steps / args.coarsening)} coarse intervals")
    if args.ranks > 1 and not under_torchrun():
        return relaunch_under_torchrun(args.ranks)
    from models.training_runs import RunConfig
    from solvers.mgrit import MGRITConfig

    config = RunConfig(args.problem, args.steps, args.batch_size, args.lr, args.momentum, args.seed, args.coarse,
                       args.data)  # fmt: skip
    report = solve(config, MGRITConfig(args.coarsening, args.levels, args.relax, args.max_cycles, args.tol))
    if report is None:  # not rank 0
        return 0
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0 if report["mgrit"]["converged"] else 1


def solve(config: RunConfig, mgrit_config: MGRITConfig) -> dict[str, Any] | None:
    """Serial training and the MGRIT solve of the same run, timed; the report on rank 0 (None on other ranks).
    Under torchrun the solve is split over the ranks (``solvers.mgrit_dist``)."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from models.training_runs import TrainingRun
    from solvers import drain
    from solvers.mgrit import MGRITResult, mgriting, sequential_chain
    from solvers.mgrit_dist import mgriting_distributed

    distributed = under_torchrun()
    if distributed:
        dist.init_process_group("gloo")
        torch.set_num_threads(1)
    rank, ranks = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        run = TrainingRun(config)
        started = time.perf_counter()
        serial = sequential_chain(run.step, run.u0, config.steps)[-1] if rank == 0 else run.u0
        serial_s = time.perf_counter() - started
        if distributed:
            dist.barrier()  # every rank starts MGRIT together
        started = time.perf_counter()
        if distributed:
            pieces = mgriting_distributed(run.step, run.u0, config.steps, mgrit_config, run.coarse)
        else:
            pieces = mgriting(run.step, run.u0, config.steps, mgrit_config, run.coarse)
        bar = tqdm(desc=f"MGRIT {config.problem} K={config.steps}", unit="cycle", disable=rank != 0 or None)

        def progress(running: MGRITResult) -> None:
            bar.update(1)
            bar.set_postfix(residual=f"{running.residuals[-1]:.2e}")

        result = drain(pieces, progress)
        bar.close()
        mgrit_s = time.perf_counter() - started
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank != 0:
        return None
    final = result.states[-1]
    relative = float((run.weights(final) - run.weights(serial)).norm() / run.weights(serial).norm())
    return {
        "run": asdict(config),
        "mgrit_config": asdict(mgrit_config),
        "ranks": ranks,
        "threads_per_rank": torch.get_num_threads(),
        "serial": {"depth": config.steps, "wall_s": serial_s, "loss": run.full_loss(serial)},
        "mgrit": {
            "cycles": result.iterations, "converged": result.converged, "exact": result.exact,
            "residual": result.residual, "residuals": result.residuals, "factors": result.factors,
            "depth": result.depth, "depth_ratio": config.steps / max(result.depth, 1),
            "fine_evaluations": result.fine_evaluations, "coarse_evaluations": result.coarse_evaluations,
            "work_ratio": (result.fine_evaluations + result.coarse_evaluations) / config.steps,
            "wall_s": mgrit_s, "loss": run.full_loss(final),
            "relative_difference": relative, "bitwise_equal": bool(torch.equal(final, serial)),
        },
    }  # fmt: skip


def summary(report: dict[str, Any]) -> str:
    m, s, k = report["mgrit"], report["serial"], report["run"]["steps"]
    factors = ", ".join(f"{f:.2g}" for f in m["factors"][:8])
    return (
        f"{report['run']['problem']} run, K = {k} steps, {report['ranks']} rank(s): MGRIT {m['cycles']} cycles, "
        f"residual {m['residual']:.2e}, converged={m['converged']}, bitwise equal to serial={m['bitwise_equal']}, "
        f"relative difference {m['relative_difference']:.2e}\n"
        f"  depth {m['depth']} against serial {k} ({m['depth_ratio']:.2f}x); work {m['work_ratio']:.1f}x serial's\n"
        f"  wall {m['wall_s']:.2f} s against serial {s['wall_s']:.2f} s; loss {m['loss']:.5f} (serial {s['loss']:.5f})"
        f"\n  convergence factor per cycle: {factors}"
    )
