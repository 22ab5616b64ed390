"""MGRIT split over processes (``solvers.mgrit_dist``): the same bits, iterations and depth as one process.

The distributed runs start real processes with ``torchrun`` (gloo on loopback), as users launch them."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solvers.mgrit_dist import chunk_bounds

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.mark.parametrize(("intervals", "ranks"), [(1, 1), (7, 2), (8, 3), (100, 7)])
def test_chunks_cover_every_interval_once_in_order(intervals: int, ranks: int) -> None:
    chunks = [chunk_bounds(intervals, ranks, r) for r in range(ranks)]
    assert chunks[0][0] == 0
    assert chunks[-1][1] == intervals
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert max(b - a for a, b in chunks) - min(b - a for a, b in chunks) <= 1


@pytest.mark.integration
def test_two_processes_reproduce_single_process_mgrit_bit_for_bit(tmp_path: Path) -> None:
    out = tmp_path / "found.json"
    subprocess.run([*TORCHRUN, str(ROOT / "tests/solvers/distributed_chain.py"), str(out)], cwd=ROOT, check=True,
                   timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    found = json.loads(out.read_text())
    assert found["ranks"] == 2
    assert len(found["cases"]) == 6
    for case in found["cases"]:
        assert all(case[key] is True for key in case if key not in ("case", "iterations")), case


@pytest.mark.integration
def test_train_run_on_two_ranks_equals_serial_training(tmp_path: Path) -> None:
    """``parafeed train-run --ranks 2`` relaunches itself under torchrun and reaches serial SGD's weights exactly."""
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "app.cli", "train-run", "regression", "--steps", "64", "--coarsening", "4",
               "--levels", "2", "--momentum", "0.9", "--ranks", "2", "--out", str(out)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, timeout=300, capture_output=True)
    report = json.loads(out.read_text())
    assert report["ranks"] == 2
    assert report["mgrit"]["bitwise_equal"] is True
    assert report["mgrit"]["exact"] is True
    assert report["mgrit"]["relative_difference"] == 0.0
    assert report["mgrit"]["depth"] > 0
