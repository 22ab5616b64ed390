"""The ``parafeed`` command line: the same engine as the server, the same JSON (DESIGN.md section 5).

Every command that reports results takes ``--json`` and then prints exactly one JSON document on stdout
(progress bars go to stderr). Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
METHODS = ("sequential", "jacobi", "jacobi_gs", "gs_jacobi")
BENCHMARKS = ("synthetic", "sampling", "gradients", "dense", "serving")
RESULTS = CHECKOUT / "benchmarks" / "results"  # what the README's tables are generated from


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2))


def _settings(args: argparse.Namespace) -> Any:
    """Settings from the environment (PARAFEED_*), overridden by the flags given on the command line."""
    from app.settings import Settings

    flags = {name: getattr(args, name, None) for name in ("host", "port", "redis_url", "device", "batching")}
    flags["registry"] = str(args.registry) if args.registry is not None else None
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure
    from app.main import create_app

    settings = _settings(args)
    configure(settings.log_json)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(settings.drain_timeout_s))  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.logs import configure
    from app.queues.redis_worker import run_worker

    settings = _settings(args)
    configure(settings.log_json)
    return run_worker(settings, name=args.name, metrics_port=args.metrics_port)


def _bench(args: argparse.Namespace) -> int:
    if not (CHECKOUT / "benchmarks" / "__init__.py").exists():
        print("parafeed bench runs from a source checkout (the benchmarks/ folder is not installed)", file=sys.stderr)
        return 2
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    import importlib

    argv = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    for name in args.only or BENCHMARKS:
        print(f"== benchmark {name} ==", file=sys.stderr)
        importlib.import_module(f"benchmarks.{name}").main(argv)
    if not args.quick and Path(args.out).resolve() == RESULTS.resolve():  # the README shows these results
        importlib.import_module("benchmarks.report").main([])
    return 0


def _train(args: argparse.Namespace) -> int:
    from models.training import TrainConfig, train

    overrides = json.loads(args.model) if args.model else {}
    cfg = TrainConfig(
        kind=args.kind,
        out=args.out or Path("runs") / args.kind,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        time_budget=args.time_budget,
        limit=args.limit,
        resume=args.resume,
        model=overrides,
    )
    summary = train(cfg)
    if args.publish:
        from models.registry import publish

        command = "parafeed " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        entry = publish(
            Path(cfg.out) / "best.safetensors",
            args.publish,
            args.registry,
            train_command=command,
            train_seconds=summary["seconds"],
            data=args.data,
        )
        summary["published"] = {"name": entry.name, "eval": entry.eval}
    _print_json(summary)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from models.registry import evaluate

    start = time.perf_counter()
    figures = evaluate(args.model, args.registry, args.data, args.limit)
    if args.json:
        _print_json(figures)
    else:
        for key, value in figures.items():
            print(f"{key:>40}: {value}")
        print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def _models(args: argparse.Namespace) -> int:
    from samplers.engine import Engine

    infos = Engine("cpu", args.registry).models()
    if args.json:
        _print_json([info.as_json() for info in infos])
    else:
        for i in infos:
            print(f"{i.name:<20} {i.kind:<10} steps={i.sequential_steps:<4} {i.description}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from models.pictures import save_grid
    from samplers.engine import Engine
    from samplers.sampling import sample
    from solvers import FixedPointBatch

    engine = Engine(args.device, args.registry)
    steps = engine.info(args.model).sequential_steps
    # On a terminal: how many positions of the slowest sample are certified final, evaluation by evaluation.
    bar = tqdm(total=steps, desc=f"{args.model} {args.method}", unit="pos", disable=not sys.stderr.isatty())

    def progress(batch: FixedPointBatch) -> None:
        bar.update(int(batch.final.min()) - bar.n if batch.rows else 0)
        bar.set_postfix(evaluations=int(batch.iterations.max()))

    body = sample(
        engine,
        args.model,
        num_samples=args.n,
        method=args.method,
        seed=args.seed,
        block_size=args.block_size,
        max_iterations=args.max_iterations,
        verify=args.verify,
        output_format=args.format,
        callback=progress,
    )
    bar.close()
    if args.out is not None:
        samples = torch.tensor(body["samples"]) if args.format == "array" else None
        if samples is None:
            print("--out needs --format array", file=sys.stderr)
            return 2
        binary = engine.info(args.model).family == "made"
        print(save_grid((samples * 255 if binary else samples).to(torch.uint8), args.out), file=sys.stderr)
    if args.json:
        _print_json(body)
        return 0
    its = body["iterations"]
    verified = {None: "not verified", True: "verified: equal to sequential", False: "VERIFICATION FAILED"}
    print(
        f"{args.n} samples of {body['model']} (seed {body['seed']}) by {body['method']}: iterations mean "
        f"{sum(its) / max(len(its), 1):.1f}, max {max(its, default=0)} of {body['sequential_steps']} sequential "
        f"steps; converged={body['converged']}; compute {body['timings_ms']['compute']:.0f} ms; "
        f"{verified[body['verified']]}"
    )
    return 0 if body["verified"] is not False else 1


def _gradient(args: argparse.Namespace) -> int:
    from samplers.engine import Engine

    engine = Engine(args.device, args.registry)
    inputs = engine.test_inputs(args.model, args.batch, args.seed)
    body = engine.gradient(args.model, inputs, args.method, args.wrt, args.max_iterations, args.verify)
    if args.json:
        _print_json(body)
        return 0
    sizes = ", ".join(f"{k} {tuple(v['shape'])}" for k, v in body["gradients"].items())
    verified = "" if body["verified"] is None else f"; max |diff| vs autograd {body['verified']['max_abs_diff']:.2e}"
    print(
        f"{body['model']} loss {body['loss']:.6f} by {body['method']}: {body['iterations']} sequential steps "
        f"(ordinary BPTT: {body['sequential_steps']}), exact={body['exact']}, residual {body['residual']:.1e}, "
        f"compute {body['timings_ms']['compute']:.0f} ms{verified}\n  gradients: {sizes}"
    )
    return 0


def _infer(args: argparse.Namespace) -> int:
    from samplers.engine import Engine

    engine = Engine(args.device, args.registry)
    inputs = engine.test_inputs(args.model, args.batch, args.seed)
    body = engine.infer(args.model, inputs, args.method, args.tol, args.max_iterations, args.verify)
    if args.json:
        _print_json(body)
        return 0
    its = body["iterations"]
    verified = "" if body["verified"] is None else f"; max |diff| vs sequential {body['verified']['max_abs_diff']:.2e}"
    shown = body["predictions"] if isinstance(body["predictions"][0], int) else "next-pixel predictions"
    print(
        f"{body['model']} by {body['method']}: iterations mean {sum(its) / len(its):.1f}, max {max(its)} of "
        f"{body['sequential_steps']}; exact={body['exact']}, residual {body['residual']:.1e}, compute "
        f"{body['timings_ms']['compute']:.0f} ms{verified}\n  predictions: {shown}"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from models.registry import publish

    entry = publish(args.checkpoint, args.name, args.registry, args.train_command, args.train_seconds, data=args.data)
    _print_json({"name": entry.name, "sha256": entry.sha256, "eval": entry.eval, "eval_slice": entry.eval_slice})
    return 0


def _images(args: argparse.Namespace) -> int:
    import torch

    from models import data as datasets
    from models.pictures import save_grid

    split = datasets.load_split(args.split, args.data)
    picked = split.images[: args.n]
    if args.binarize:
        picked = (picked > 127).to(torch.uint8) * 255
    print(save_grid(picked, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parafeed", description="Exact parallel evaluation of sequential nets.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    registry_help = "registry directory (default: PARAFEED_CHECKPOINTS, then the shipped checkpoints)"

    def compute_flags(sub: argparse.ArgumentParser, endpoint: str, iterations: str, reference: str) -> None:
        """The flags /gradient and /infer share: test-set inputs by seed, caps, verification, output."""
        sub.add_argument("--batch", type=int, default=4)
        sub.add_argument("--seed", type=int, default=0, help="picks the test-set inputs")
        sub.add_argument("--max-iterations", type=int, help=iterations)
        sub.add_argument("--verify", action="store_true", help=f"also run {reference} and report max |diff|")
        sub.add_argument("--json", action="store_true", help=f"print the POST {endpoint} response body")
        sub.add_argument("--device", default="auto")
        sub.add_argument("--registry", type=Path, help=registry_help)

    data_help = "IDX data directory (default: PARAFEED_DATA, then /usr/share/datasets/fashion-mnist)"

    serve = command("serve", _serve, "run the HTTP server (embedded worker unless --redis-url)")
    serve.add_argument("--host", help="default 127.0.0.1 (PARAFEED_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (PARAFEED_PORT)")
    serve.add_argument("--redis-url", help="enqueue to Redis Streams for `parafeed worker` processes")
    serve.add_argument("--device", help="auto | cpu | cuda[:N] (embedded worker)")
    serve.add_argument("--registry", type=Path, help=registry_help)
    serve.add_argument("--batching", choices=["iteration", "static"], help="default iteration (continuous)")

    worker = command("worker", _worker, "run a worker that serves jobs from Redis Streams")
    worker.add_argument("--redis-url", required=False, help="default PARAFEED_REDIS_URL")
    worker.add_argument("--device", help="auto | cpu | cuda[:N]")
    worker.add_argument("--registry", type=Path, help=registry_help)
    worker.add_argument("--name", help="consumer name (default host-pid)")
    worker.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    worker.add_argument("--batching", choices=["iteration", "static"])

    models = command("models", _models, "list the registered models")
    models.add_argument("--json", action="store_true")
    models.add_argument("--registry", type=Path, help=registry_help)

    evaluate = command("eval", _eval, "evaluate a registered model on the test set")
    evaluate.add_argument("model")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--limit", type=int, help="only the first N test images")
    evaluate.add_argument("--registry", type=Path, help=registry_help)
    evaluate.add_argument("--data", help=data_help)

    train = command("train", _train, "train a model family on Fashion-MNIST")
    train.add_argument("kind", choices=["made", "pixelcnnpp", "densenet", "rnn", "gru"])
    train.add_argument("--data", help=data_help)
    train.add_argument("--out", type=Path, help="run directory (default: runs/KIND)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    train.add_argument("--time-budget", type=float, help="seconds of training before a clean stop")
    train.add_argument("--limit", type=int, help="only the first N training images")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    train.add_argument("--model", help="model config overrides as JSON, e.g. '{\"nr_filters\": 16}'")
    train.add_argument("--publish", metavar="NAME", help="afterwards, evaluate and register the best checkpoint")
    train.add_argument("--registry", type=Path, help=registry_help)

    sample = command("sample", _sample, "draw exact samples from an autoregressive model")
    sample.add_argument("model")
    sample.add_argument("-n", type=int, default=16, help="number of samples")
    sample.add_argument("--method", default="auto", choices=[*METHODS, "jacobi_split", "auto"])
    sample.add_argument("--seed", type=int, help="default: random, printed in the output")
    sample.add_argument("--block-size", type=int, help="jacobi_gs block / gs_jacobi window (default: one image row)")
    sample.add_argument("--max-iterations", type=int, help="cap per sample (reported as converged=false)")
    sample.add_argument("--verify", action="store_true", help="also run sequentially and compare bit for bit")
    sample.add_argument("--format", default="array", choices=["array", "png"])
    sample.add_argument("--json", action="store_true", help="print the POST /sample response body")
    sample.add_argument("--out", type=Path, help="also write the samples as a PNG grid")
    sample.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    sample.add_argument("--registry", type=Path, help=registry_help)

    gradient = command("gradient", _gradient, "gradients of a sequence model on test-set inputs")
    gradient.add_argument("model")
    gradient.add_argument("--method", default="auto", choices=["sequential", "jacobi", "scan", "auto"])
    gradient.add_argument("--wrt", default="params", choices=["params", "inputs"])
    compute_flags(gradient, "/gradient", "jacobi: n iterations = n-step truncated BPTT", "autograd")

    infer = command("infer", _infer, "forward a classifier or sequence model through the solvers")
    infer.add_argument("model")
    infer.add_argument("--method", default="auto", choices=["sequential", "jacobi", "auto"])
    infer.add_argument("--tol", type=float, default=0.0, help="stop when iterates agree within tol (inexact)")
    compute_flags(infer, "/infer", "cap on iterations (reported as exact: false)", "the sequential forward")

    pub = command("publish", _publish, "register a trained checkpoint (evaluates it, records its checksum)")
    pub.add_argument("checkpoint", type=Path)
    pub.add_argument("--name", required=True)
    pub.add_argument("--registry", type=Path, help=registry_help)
    pub.add_argument("--train-command", default="")
    pub.add_argument("--train-seconds", type=float)
    pub.add_argument("--data", help=data_help)

    images = command("images", _images, "write a PNG grid of dataset images")
    images.add_argument("--split", default="test", choices=["train", "test"])
    images.add_argument("-n", type=int, default=64)
    images.add_argument("--binarize", action="store_true", help="as MADE sees them (pixel > 127)")
    images.add_argument("--out", type=Path, default=Path("test-images.png"))
    images.add_argument("--data", help=data_help)

    bench = command("bench", _bench, "run the benchmarks; JSON + PNG land in --out")
    bench.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    bench.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these (default: all)")
    bench.add_argument("--out", type=Path, default=RESULTS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.data import DataNotFoundError
    from models.registry import ChecksumError, UnknownModelError
    from samplers.engine import WrongKindError

    try:
        return int(args.handler(args))
    except (DataNotFoundError, UnknownModelError, ChecksumError, WrongKindError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"parafeed {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
