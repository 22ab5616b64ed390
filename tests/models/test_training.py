"""Training on a real slice of Fashion-MNIST lowers the loss, resumes exactly, and checkpoints without pickle."""

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_tensors, read_metadata
from models.training import TrainConfig, train

SMALL = {
    "made": {"hidden_sizes": [64, 64]},
    "pixelcnnpp": {"nr_resnet": 1, "nr_filters": 8, "nr_mix": 2},
    "densenet": {"growth": 4, "block_layers": [2, 2, 2]},
    "rnn": {"hidden_size": 16},
    "gru": {"hidden_size": 8, "image_size": 10},
}


@pytest.mark.parametrize("kind", list(SMALL))
def test_a_few_steps_reduce_the_loss(kind: str, tmp_path: Path) -> None:
    cfg = TrainConfig(kind=kind, out=tmp_path, epochs=3, limit=640, batch_size=32, model=SMALL[kind], lr=3e-3)
    summary = train(cfg)
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [e["val_loss"] for e in epochs if e["event"] == "epoch"]
    assert val[-1] < val[0]
    assert summary["stopped"] == "epochs"
    meta = read_metadata(tmp_path / "best.safetensors")
    assert meta["kind"] == kind
    assert load_tensors(tmp_path / "best.safetensors")


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    base = {"kind": "made", "limit": 320, "batch_size": 32, "model": SMALL["made"], "lr": 3e-3}
    straight = train(TrainConfig(out=tmp_path / "a", epochs=2, **base))
    train(TrainConfig(out=tmp_path / "b", epochs=1, **base))
    resumed = train(TrainConfig(out=tmp_path / "b", epochs=2, resume=True, **base))
    assert resumed["steps"] == straight["steps"]
    a = load_tensors(tmp_path / "a" / "last.safetensors")
    b = load_tensors(tmp_path / "b" / "last.safetensors")
    for key in a:
        if key.startswith("model/"):
            assert torch.equal(a[key], b[key]), key


def test_time_budget_stops_cleanly(tmp_path: Path) -> None:
    summary = train(TrainConfig(kind="made", out=tmp_path, epochs=50, limit=3200, model=SMALL["made"], time_budget=0.5))
    assert summary["stopped"] == "time_budget"
    assert (tmp_path / "best.safetensors").exists()
