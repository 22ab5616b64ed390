"""Decoupled parallel backprop (``models.ddg``): K = 1 is backprop bit for bit; the delay schedule is the paper's;
two processes (torchrun, gloo on loopback) train end to end; a dead worker ends the run and --resume continues."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_tensors, read_metadata
from models.ddg import partition, train_ddg
from models.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
TINY = {"growth": 4, "block_layers": [2, 2, 2]}
BASE = {"kind": "densenet", "limit": 192, "batch_size": 32, "model": TINY, "lr": 3e-3, "validation": 64}


def test_one_module_is_ordinary_backprop_bit_for_bit(tmp_path: Path) -> None:
    ordinary = train(TrainConfig(out=tmp_path / "a", epochs=2, **BASE))
    decoupled = train_ddg(TrainConfig(out=tmp_path / "b", epochs=2, **BASE), modules=1)
    assert decoupled["best_val"] == ordinary["best_val"]
    a, b = load_tensors(tmp_path / "a/last.safetensors"), load_tensors(tmp_path / "b/last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)  # weights, BN statistics and AdamW moments


@pytest.mark.parametrize(("costs", "modules", "expected"), [
    ([1, 1, 1, 1], 2, [(0, 2), (2, 4)]),
    ([8, 1, 1, 1, 1], 2, [(0, 1), (1, 5)]),
    ([3, 3, 2, 2, 2], 3, [(0, 1), (1, 3), (3, 5)]),
])  # fmt: skip
def test_modules_are_contiguous_and_balanced(costs: list[float], modules: int, expected: list[tuple[int, int]]) -> None:
    assert partition(costs, modules) == expected


def delayed_sgd_reference(w: list[float], xs: list[float], lr: float) -> list[list[float]]:
    """Hand-written DDG on y = w2 * (w1 * x), loss (y - 1)^2 / 2, K = 2, plain SGD: module 1 (w2) steps at once
    with its fresh gradient; module 0 (w1) steps at iteration t with the error sent back at t-1, applied through
    the activations and weight w1 of iteration t-1 (stale by one); the last forward is drained at the end."""
    w1, w2 = w
    history, kept = [], None
    for x in xs:
        h = w1 * x  # module 0 forward with the current w1
        if kept is not None:  # module 0: delayed update from the previous iteration's error
            x_old, delta_old = kept
            w1 -= lr * delta_old * x_old
        y = w2 * h
        error = y - 1.0
        delta = error * w2  # d loss / d h, with the w2 of this forward
        w2 -= lr * error * h
        kept = (x, delta)
        history.append([w1, w2])
    x_old, delta_old = kept  # type: ignore[misc]
    w1 -= lr * delta_old * x_old
    history.append([w1, w2])
    return history


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.mark.integration
def test_delay_schedule_matches_the_hand_written_reference(tmp_path: Path) -> None:
    """The real schedule (``models.ddg_pipeline``) over two gloo processes on a two-weight linear chain."""
    from tests.models.ddg_toy import LR, START, XS

    out = tmp_path / "weights"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([*TORCHRUN, str(ROOT / "tests/models/ddg_toy.py"), str(out)], cwd=ROOT, env=env, check=True,
                   timeout=300)  # fmt: skip
    w1, w2 = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1))
    expected = delayed_sgd_reference(START, XS, LR)
    found = [value for pair in zip(w1, w2, strict=True) for value in pair]
    assert found == pytest.approx([value for pair in expected for value in pair], rel=1e-6)  # float32 weights
    assert w1[0] == pytest.approx(START[0])  # warm-up: module 0 has no gradient in its first iteration


def ddg_command(out: Path, epochs: int, *extra: str) -> list[str]:
    model = json.dumps(TINY)
    return [sys.executable, "-m", "app.cli", "train", "densenet", "--ddg", "2", "--epochs", str(epochs), "--limit",
            "320", "--batch-size", "32", "--model", model, "--out", str(out), *extra]  # fmt: skip


@pytest.mark.integration
def test_two_processes_train_end_to_end_and_record_that_it_is_inexact(tmp_path: Path) -> None:
    done = subprocess.run(ddg_command(tmp_path, 2), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2
    assert epochs[1]["val_loss"] < epochs[0]["val_loss"] or epochs[1]["train_loss"] < epochs[0]["train_loss"]
    training = read_metadata(tmp_path / "best.safetensors")["extra"]["training"]
    assert training["method"] == "ddg"
    assert training["modules"] == 2
    assert training["exact_backprop"] is False
    assert {"last-rank0.safetensors", "last-rank1.safetensors"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.integration
def test_a_dead_worker_fails_the_run_and_resume_continues(tmp_path: Path) -> None:
    """The last rank exits mid-epoch 2: the run fails (no hang); --resume restarts from the end of epoch 1."""
    env = {**os.environ, "PARAFEED_DDG_FAIL_AT": "13"}  # epoch 1 is steps 0..9 (320 images, batches of 32)
    failed = subprocess.run(ddg_command(tmp_path, 2), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    before = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in before if r["event"] == "epoch"] == [1]
    resumed = subprocess.run(ddg_command(tmp_path, 2, "--resume"), cwd=ROOT, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    after = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in after if r["event"] == "epoch"] == [1, 2]
    assert after[-1]["steps"] == 20
