"""``parafeed sample``, ``gradient`` and ``infer``: the HTTP bodies, computed in this process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from app.cli.common import print_json, settings


def sample(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from models.pictures import save_grid
    from samplers.requests import SampleRequest, SampleResponse
    from solvers import FixedPointBatch

    engine = settings(args).engine()
    request = SampleRequest(model=args.model, num_samples=args.n, method=args.method, seed=args.seed,
                            block_size=args.block_size, max_iterations=args.max_iterations, verify=args.verify,
                            format=args.format)  # fmt: skip
    if args.out is not None and args.format != "array":
        print("--out needs --format array", file=sys.stderr)
        return 2
    steps = engine.info(args.model).sequential_steps
    # On a terminal: how many positions of the slowest sample are certified final, evaluation by evaluation.
    bar = tqdm(total=steps, desc=f"{args.model} {args.method}", unit="pos", disable=not sys.stderr.isatty())

    def progress(batch: FixedPointBatch) -> None:
        bar.update(int(batch.final.min()) - bar.n if batch.rows else 0)
        bar.set_postfix(evaluations=int(batch.iterations.max()))

    body = engine.run("sample", request, callback=progress)
    bar.close()
    assert isinstance(body, SampleResponse)
    if args.out is not None:
        levels = engine.sampling_system(args.model).levels
        images = torch.round(torch.tensor(body.samples, dtype=torch.float64) * (255 / (levels - 1)))
        print(save_grid(images.to(torch.uint8), args.out), file=sys.stderr)
    if args.json:
        print_json(body.model_dump())
        return 0
    its = body.iterations
    verified = {None: "not verified", True: "verified: equal to sequential", False: "VERIFICATION FAILED"}
    print(
        f"{args.n} samples of {body.model} (seed {body.seed}) by {body.method}: iterations mean "
        f"{sum(its) / max(len(its), 1):.1f}, max {max(its, default=0)} of {body.sequential_steps} sequential "
        f"steps; converged={body.converged}; compute {body.timings_ms.compute:.0f} ms; {verified[body.verified]}"
    )
    return 0 if body.verified is not False else 1


def computed(args: argparse.Namespace, task: str, summary: Callable[[Any], str], **fields: Any) -> int:
    """POST /gradient or /infer on test-set inputs: the body with --json, else a summary line."""
    common = ("model", "batch", "seed", "method", "max_iterations", "verify")
    body = settings(args).engine().call(task, **{name: getattr(args, name) for name in common}, **fields)
    print_json(body.model_dump()) if args.json else print(summary(body))
    return 0


def gradient(args: argparse.Namespace) -> int:
    def summary(body: Any) -> str:
        sizes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in body.gradients.items())
        verified = "" if body.verified is None else f"; max |diff| vs autograd {body.verified.max_abs_diff:.2e}"
        return (f"{body.model} loss {body.loss:.6f} by {body.method}: {body.iterations} sequential steps "
                f"(ordinary BPTT: {body.sequential_steps}), exact={body.exact}, residual {body.residual:.1e}, "
                f"compute {body.timings_ms.compute:.0f} ms{verified}\n  gradients: {sizes}")  # fmt: skip

    return computed(args, "gradient", summary, wrt=args.wrt)


def infer(args: argparse.Namespace) -> int:
    def summary(body: Any) -> str:
        its = body.iterations
        verified = "" if body.verified is None else f"; max |diff| vs sequential {body.verified.max_abs_diff:.2e}"
        shown = body.predictions if isinstance(body.predictions[0], int) else "next-pixel predictions"
        return (f"{body.model} by {body.method}: iterations mean {sum(its) / len(its):.1f}, max {max(its)} of "
                f"{body.sequential_steps}; exact={body.exact}, residual {body.residual:.1e}, compute "
                f"{body.timings_ms.compute:.0f} ms{verified}\n  predictions: {shown}")  # fmt: skip

    return computed(args, "infer", summary, tol=args.tol)
