"""The flags of every ``parafeed`` command. Method and kind choices come from the registries, never a list here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from app.cli import compute, service, train_run, training

REGISTRY_HELP = "checkpoint directory (default: PARAFEED_REGISTRY, then the shipped checkpoints)"
DATA_HELP = "IDX data directory (default: PARAFEED_DATA, then /usr/share/datasets/fashion-mnist)"
DEVICE_HELP = "auto | cpu | cuda[:N] (default: PARAFEED_DEVICE, then auto)"
THREADS_HELP = "torch threads (default: PARAFEED_THREADS, else the cores over PARAFEED_WORKERS_PER_HOST)"


def methods(task: str) -> list[str]:
    from samplers.families import task_methods

    return [*task_methods(task), "auto"]


Command = Callable[..., argparse.ArgumentParser]
Where = Callable[..., None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parafeed", description="Exact parallel evaluation of sequential nets.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def where(sub: argparse.ArgumentParser, device: bool = True, data: bool = False) -> None:
        sub.add_argument("--registry", type=Path, help=REGISTRY_HELP)
        if device:
            sub.add_argument("--device", help=DEVICE_HELP)
        if data:
            sub.add_argument("--data", help=DATA_HELP)

    service_commands(command, where)
    compute_commands(command, where)
    training_commands(command, where)
    return parser


def service_commands(command: Command, where: Where) -> None:
    serve = command("serve", service.serve, "run the HTTP server (embedded worker unless --redis-url)")
    serve.add_argument("--host", help="default 127.0.0.1 (PARAFEED_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (PARAFEED_PORT)")
    serve.add_argument("--redis-url", help="enqueue to Redis Streams for `parafeed worker` processes")
    serve.add_argument("--batching", choices=["iteration", "static"], help="default iteration (continuous)")
    serve.add_argument("--threads", type=int, help=THREADS_HELP)
    where(serve, data=True)

    worker = command("worker", service.worker, "run a worker that serves jobs from Redis Streams")
    worker.add_argument("--redis-url", help="default PARAFEED_REDIS_URL")
    worker.add_argument("--name", help="consumer name (default host-pid)")
    worker.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    worker.add_argument("--batching", choices=["iteration", "static"])
    worker.add_argument("--threads", type=int, help=THREADS_HELP)
    where(worker, data=True)

    models = command("models", service.models, "list the registered models")
    models.add_argument("--json", action="store_true", help="print the GET /models body")
    where(models, device=False)

    bench = command("bench", service.bench, "run the benchmarks; JSON + PNG land in --out")
    bench.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    bench.add_argument("--only", nargs="*", choices=service.BENCHMARKS, help="run only these (default: all)")
    bench.add_argument("--out", type=Path, default=service.RESULTS)
    bench.add_argument("--gpu-check", action="store_true", help="exactness of every method on CUDA and the headline "
                       "ratios (benchmarks/gpu_check.py); with --dry: the same on the CPU at small sizes")  # fmt: skip
    bench.add_argument("--dry", action="store_true", help="with --gpu-check: CPU, small sizes (what CI runs)")
    bench.add_argument("--registry", default=None, help="with --gpu-check: checkpoint directory (default: shipped)")


def compute_commands(command: Command, where: Where) -> None:
    sample = command("sample", compute.sample, "draw exact samples from an autoregressive model")
    sample.add_argument("model")
    sample.add_argument("-n", type=int, default=16, help="number of samples")
    sample.add_argument("--method", default="auto", choices=methods("sample"))
    sample.add_argument("--seed", type=int, help="default: random, printed in the output")
    sample.add_argument("--block-size", type=int, help="jacobi_gs block / gs_jacobi window (default: one image row)")
    sample.add_argument("--max-iterations", type=int, help="cap per sample (reported as converged=false)")
    sample.add_argument("--verify", action="store_true", help="also run sequentially and compare bit for bit")
    sample.add_argument("--format", default="array", choices=["array", "png"])
    sample.add_argument("--json", action="store_true", help="print the POST /sample response body")
    sample.add_argument("--out", type=Path, help="also write the samples as a PNG grid")
    where(sample)

    def flags(sub: argparse.ArgumentParser, task: str, iterations: str, reference: str) -> None:
        """The flags /gradient and /infer share: test-set inputs by seed, caps, verification, output."""
        sub.add_argument("model")
        sub.add_argument("--method", default="auto", choices=methods(task))
        sub.add_argument("--batch", type=int, default=4)
        sub.add_argument("--seed", type=int, default=0, help="picks the test-set inputs")
        sub.add_argument("--max-iterations", type=int, help=iterations)
        sub.add_argument("--verify", action="store_true", help=f"also run {reference} and report max |diff|")
        sub.add_argument("--json", action="store_true", help=f"print the POST /{task} response body")
        where(sub, data=True)

    gradient = command("gradient", compute.gradient, "gradients of a sequence model on test-set inputs")
    gradient.add_argument("--wrt", default="params", choices=["params", "inputs"])
    flags(gradient, "gradient", "jacobi: n iterations = n-step truncated BPTT", "autograd")

    infer = command("infer", compute.infer, "forward a classifier or sequence model through the solvers")
    infer.add_argument("--tol", type=float, default=0.0, help="stop when iterates agree within tol (inexact)")
    flags(infer, "infer", "cap on iterations (reported as exact: false)", "the sequential forward")


def training_commands(command: Command, where: Where) -> None:
    from models.tasks import TASKS

    evaluate = command("eval", training.evaluate, "evaluate a registered model on the test set")
    evaluate.add_argument("model")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--limit", type=int, help="only the first N test images")
    where(evaluate, device=False, data=True)

    train = command("train", training.train, "train a model family on Fashion-MNIST")
    train.add_argument("kind", choices=list(TASKS))
    train.add_argument("--out", type=Path, help="run directory (default: runs/KIND)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--time-budget", type=float, help="seconds of training before a clean stop")
    train.add_argument("--limit", type=int, help="only the first N training images")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    train.add_argument("--model", help="model config overrides as JSON, e.g. '{\"nr_filters\": 16}'")
    train.add_argument("--publish", metavar="NAME", help="afterwards, evaluate and register the best checkpoint")
    train.add_argument("--ddg", type=int, metavar="K", help="decoupled parallel backprop with delayed gradients over "
                       "K processes (densenet; relaunches under torchrun; inexact: models.ddg)")  # fmt: skip
    where(train, data=True)

    run = command("train-run", train_run.train_run, "solve a training run in parallel over its steps (MGRIT)")
    train_run.add_arguments(run)

    pub = command("publish", training.publish, "register a trained checkpoint (evaluates it, records its checksum)")
    pub.add_argument("checkpoint", type=Path)
    pub.add_argument("--name", required=True)
    pub.add_argument("--train-command", default="")
    pub.add_argument("--train-seconds", type=float)
    where(pub, device=False, data=True)

    images = command("images", training.images, "write a PNG grid of dataset images")
    images.add_argument("--split", default="test", choices=["train", "test"])
    images.add_argument("-n", type=int, default=64)
    images.add_argument("--binarize", action="store_true", help="as MADE sees them (pixel > 127)")
    images.add_argument("--out", type=Path, default=Path("test-images.png"))
    where(images, device=False, data=True)
