"""The worked plugin example, installed as the README says, served through the HTTP API (embedded and Redis).

The example package is installed with pip into a temporary folder (not into the venv), which the server and the
worker find on their PYTHONPATH: its entry point "parafeed.models" is all that tells parafeed about it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.processes import ROOT
from tests.fixtures.servers import RedisServer, start_server, start_worker, stop, wait_ready

pytestmark = pytest.mark.integration
EXAMPLE = ROOT / "examples" / "pixel-transformer"
MODEL = "pixel-transformer-fmnist"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--target", str(target), str(EXAMPLE)]  # fmt: skip
    subprocess.run(command, check=True, cwd=target)
    assert (target / "pixel_transformer" / "checkpoints" / "manifest.json").exists()
    return target


def sample_and_verify(base: str) -> None:
    models = {m["name"]: m for m in httpx.get(f"{base}/models", timeout=30).json()}
    assert models[MODEL]["kind"] == "sampler"
    assert models[MODEL]["shape"] == [1, 14, 14]
    assert set(models[MODEL]["methods"]) >= {"sequential", "jacobi", "gs_jacobi", "auto"}
    answers = {}
    for method in ("jacobi", "gs_jacobi", "auto"):
        body = {"model": MODEL, "num_samples": 2, "method": method, "seed": 3, "verify": True}
        r = httpx.post(f"{base}/sample", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["verified"] is True
        answers[method] = r.json()["samples"]
    assert answers["jacobi"] == answers["gs_jacobi"] == answers["auto"]


def test_the_installed_example_is_served_by_the_embedded_server(installed: Path, server_registry: Path) -> None:
    server, base = start_server(server_registry, pythonpath=[installed])
    try:
        sample_and_verify(base)
    finally:
        stop(server)


def test_the_installed_example_is_served_by_redis_workers(
    installed: Path, server_registry: Path, redis_server: RedisServer
) -> None:
    server, base = start_server(server_registry, redis_server.url, pythonpath=[installed])
    worker = start_worker(redis_server.url, server_registry, "w-plugin", pythonpath=[installed])
    try:
        wait_ready(base)
        sample_and_verify(base)
    finally:
        stop(worker)
        stop(server)
