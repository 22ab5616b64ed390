"""The GPU check's dry mode (CPU, tiny models): the command a GPU session runs cannot rot in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main as cli


@pytest.mark.integration
def test_the_gpu_check_runs_dry_and_finds_every_method_exact(tiny_registry: Path, tmp_path: Path) -> None:
    assert cli(["bench", "--gpu-check", "--dry", "--registry", str(tiny_registry), "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "gpu-check-cpu-dry.json").read_text())
    assert (tmp_path / "gpu-check-cpu-dry.png").exists()
    exact = payload["exactness"]
    assert {r["model"] for r in exact} >= {"made-tiny", "pixelcnnpp-tiny", "densenet-tiny", "rnn-tiny"}
    assert all(r["exact"] for r in exact), [r for r in exact if not r["exact"]]
    made = {r["method"]: r["how"] for r in exact if r["model"] == "made-tiny"}
    assert made["sequential"] == "certified"
    assert made["sequential_naive"] == "sequential"
    assert any(r["method"] == "sequential" and r["speedup_vs_sequential"] == 1.0 for r in payload["ratios"])
    pixel = {r["method"]: r["how"] for r in exact if r["model"] == "pixelcnnpp-tiny"}
    assert pixel["sequential"] == pixel["jacobi_window"] == "certified"
    assert {r["method"] for r in payload["orthogonal"]} >= {"givens round-robin", "torch matrix_exp"}
