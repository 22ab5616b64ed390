"""The orthogonal benchmark's quick mode runs (the full one takes minutes): every method at small n."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.orthogonal import main


def test_quick_orthogonal_benchmark_writes_results_and_ratios(tmp_path: Path) -> None:
    payload = main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "orthogonal-quick-cpu.json").read_text())
    assert written["results"] == payload["results"]
    assert (tmp_path / "orthogonal-quick-cpu.png").exists()
    methods = {r["method"] for r in payload["results"]}
    assert {"givens round-robin", "givens sequential", "torch matrix_exp", "torch householder"} <= methods
    round_robin = [r for r in payload["results"] if r["method"] == "givens round-robin"]
    assert [r["depth_forward"] for r in round_robin] == [15, 31]  # n - 1 rounds
    assert all(r["vs_sequential_build"] > 0 for r in payload["ratios"])
