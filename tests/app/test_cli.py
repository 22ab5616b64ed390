"""The command line runs the real engine."""

import json
from pathlib import Path

from app.cli import main


def test_bench_quick_writes_json_and_png(tmp_path: Path) -> None:
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "synthetic-quick.json").read_text())
    assert (tmp_path / "synthetic-quick.png").stat().st_size > 10_000
    by_key = {(r["system"], r["method"]): r for r in payload["results"]}
    assert all(r["equal_fraction"] == 1.0 for r in payload["results"])
    assert by_key[("counter", "jacobi")]["evaluations"] == payload["config"]["length"]
    assert by_key[("made-bernoulli", "jacobi")]["evaluations"] < payload["config"]["length"]
