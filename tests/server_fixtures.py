"""Server test fixtures: a real Redis on a free loopback port, worker and server processes, tiny registries."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from benchmarks.processes import PARAFEED, ROOT, free_port
from models.checkpoint import config_to_dict, save_model, sha256
from models.made import MADE, MADEConfig
from models.registry import Entry, read_manifest, write_manifest
from tests.samplers.conftest import build_registry


class RedisServer:
    """A real redis-server process (no persistence: a restart forgets everything, the hardest case)."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not found: `make test` installs Debian's redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def add_slow_model(directory: Path) -> Path:
    """A full-size MADE (784-512-512, random weights): sequential sampling takes seconds, long enough to kill."""
    torch.manual_seed(0)
    config = MADEConfig()
    model = MADE(config)
    path = directory / "made-slow.safetensors"
    save_model(model, "made", config, path)
    entries = read_manifest(directory)
    entries["made-slow"] = Entry("made-slow", "made", path.name, sha256(path), config_to_dict(config))
    write_manifest(entries, directory)
    return directory


@pytest.fixture(scope="session")
def server_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_slow_model(build_registry(tmp_path_factory.mktemp("server-registry")))


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    return env


def start_worker(url: str, registry: Path, name: str, **settings: str) -> subprocess.Popen[bytes]:
    env = environment(**{f"PARAFEED_{k.upper()}": v for k, v in settings.items()})
    cmd = [*PARAFEED, "worker", "--redis-url", url, "--registry", str(registry), "--name", name, "--device", "cpu"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_server(registry: Path, redis_url: str | None = None, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = environment(**{f"PARAFEED_{k.upper()}": v for k, v in settings.items()})
    cmd = [*PARAFEED, "serve", "--port", str(port), "--registry", str(registry), "--device", "cpu"]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "server died")
    raise RuntimeError("server did not start")


def wait_ready(base: str, workers: int = 1, timeout: float = 60.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(f"{base}/readyz", timeout=2)
        if r.status_code == 200 and r.json()["workers"] >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"not ready: {r.json()}")


def stop(process: subprocess.Popen[bytes], sig: int | None = None, timeout: float = 30.0) -> int:
    if process.poll() is None:
        if sig is None:
            process.terminate()
        else:
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
