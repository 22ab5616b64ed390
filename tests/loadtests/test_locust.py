"""The load test itself, in a short bounded form: it must pass its thresholds against a real server."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from loadtests import run

pytestmark = pytest.mark.integration


def test_short_locust_run_passes_its_thresholds(
    server_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARAFEED_LOAD_SAMPLER", "made-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_SEQUENCE", "rnn-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_CLASSIFIER", "densenet-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_P95_MS", os.environ.get("PARAFEED_LOAD_P95_MS", "3000"))
    monkeypatch.setenv("PARAFEED_LOAD_P99_MS", os.environ.get("PARAFEED_LOAD_P99_MS", "8000"))
    status = run.main(["--run-time", "12s", "--users", "4", "--registry", str(server_registry), "--out", str(tmp_path)])
    assert status == 0
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "locust_stats.csv").open())}
    assert int(rows["Aggregated"]["Request Count"]) > 20
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert {"/sample", "/gradient", "/infer"} <= set(rows)
    assert (tmp_path / "locust-latency.png").stat().st_size > 5000


def test_thresholds_fail_the_run(server_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAFEED_LOAD_SAMPLER", "made-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_SEQUENCE", "rnn-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_CLASSIFIER", "densenet-tiny")
    monkeypatch.setenv("PARAFEED_LOAD_P95_MS", "0.001")  # impossible: the run must report failure
    status = run.main(["--run-time", "4s", "--users", "2", "--registry", str(server_registry), "--out", str(tmp_path)])
    assert status == 1


def test_mixed_load_with_hostile_clients_passes_its_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short form of the mixed scenario on the shipped models (the README's figure is the full run; the light
    threshold here is loose for a shared CI machine)."""
    monkeypatch.setenv("PARAFEED_LOAD_LIGHT_P99_MS", os.environ.get("PARAFEED_LOAD_LIGHT_P99_MS", "1000"))
    monkeypatch.setenv("PARAFEED_HTTP_HEADER_TIMEOUT_S", "3")  # the slowloris clients are cut off within the run
    monkeypatch.setenv("PARAFEED_LOAD_SLOWLORIS_S", "6")
    status = run.main(["--scenario", "mixed", "--run-time", "15s", "--out", str(tmp_path)])
    assert status == 0
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "locust-mixed_stats.csv").open())}
    assert int(rows["/sample (light)"]["Request Count"]) > 20
    assert int(rows["slowloris"]["Request Count"]) >= 1
    assert int(rows["Aggregated"]["Failure Count"]) == 0
