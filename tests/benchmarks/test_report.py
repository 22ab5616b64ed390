"""The README's result tables are generated from the benchmark results, and say so when a result is missing."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report


def test_the_readme_tables_match_the_result_files() -> None:
    assert report.main(["--check"]) == 0, "run `python -m benchmarks.report` after a benchmark"


def test_tables_are_filled_from_results_and_only_between_markers(tmp_path: Path) -> None:
    env = {"date": "2026-11-22T00:00:00+00:00", "machine": "x86_64", "cpu_count": 2, "torch": "2.13.0",
           "torch_threads": 2, "command": "python -m benchmarks.synthetic", "commit": "abc1234"}  # fmt: skip
    rows = [{"system": "chain", "method": m, "evaluations": e, "speedup_wall": 1.0}
            for m, e in (("sequential", 50), ("jacobi", 50))]  # fmt: skip
    (tmp_path / "synthetic.json").write_text(json.dumps({"environment": env, "results": rows}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:synthetic -->\nstale\n<!-- /report:synthetic -->\n"
                      "<!-- report:dense -->\n<!-- /report:dense -->\noutro\n")  # fmt: skip
    assert report.main(["--readme", str(readme), "--results", str(tmp_path)]) == 0
    text = readme.read_text()
    assert "stale" not in text
    assert "| chain | 50 (1.0x wall) | 50 (1.0x wall) |" in text
    assert "commit abc1234" in text
    assert "Not measured yet: run `python -m benchmarks.dense`" in text
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")
    assert report.main(["--readme", str(readme), "--results", str(tmp_path), "--check"]) == 0
