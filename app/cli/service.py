"""``parafeed serve``, ``worker``, ``models`` and ``bench``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from app.cli.common import print_json, settings

CHECKOUT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("synthetic", "sampling", "gradients", "dense", "serving", "recovery")
RESULTS = CHECKOUT / "benchmarks" / "results"  # what the README's tables are generated from


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure
    from app.main import create_app
    from app.transport import guarded_protocol

    config = settings(args)
    configure(config.log_json)
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(config.drain_timeout_s), http=guarded_protocol(config.http_limits),
                limit_concurrency=config.max_connections, timeout_keep_alive=config.keep_alive_s)  # fmt: skip
    return 0


def worker(args: argparse.Namespace) -> int:
    from app.logs import configure
    from app.worker.process import run_worker

    config = settings(args)
    configure(config.log_json)
    return run_worker(config, name=args.name, metrics_port=args.metrics_port)


def models(args: argparse.Namespace) -> int:
    infos = settings(args).model_copy(update={"device": "cpu"}).engine().models()
    if args.json:
        print_json([info.model_dump() for info in infos])
    else:
        for i in infos:
            print(f"{i.name:<20} {i.kind:<10} steps={i.sequential_steps:<4} {i.description}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if not (CHECKOUT / "benchmarks" / "__init__.py").exists():
        print("parafeed bench runs from a source checkout (the benchmarks/ folder is not installed)", file=sys.stderr)
        return 2
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    if args.gpu_check:
        argv = ["--out", str(args.out)] + (["--dry"] if args.dry else [])
        importlib.import_module("benchmarks.gpu_check").main(argv + (["--registry", args.registry] if args.registry
                                                                     else []))  # fmt: skip
        return 0
    argv = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    for name in args.only or BENCHMARKS:
        print(f"== benchmark {name} ==", file=sys.stderr)
        importlib.import_module(f"benchmarks.{name}").main(argv)
    if not args.quick and Path(args.out).resolve() == RESULTS.resolve():  # the README shows these results
        importlib.import_module("benchmarks.report").main([])
    return 0
