"""The Dockerfile and compose file, checked without a Docker engine: hadolint plus the structure we rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_structure() -> None:
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    args = {rest.split("=")[0]: rest for kind, rest in steps if kind == "ARG"}
    assert "BASE_IMAGE" in args  # CUDA base by build argument
    assert "python:3.11" in args["BASE_IMAGE"]  # CPU by default
    assert steps[kinds.index("FROM")][1] == "${BASE_IMAGE}"
    assert "TORCH_VERSION=2.13.0" in args["TORCH_VERSION"]  # torch pinned exactly
    copies = [rest for kind, rest in steps if kind == "COPY"]
    first_code = next(i for i, (kind, rest) in enumerate(steps) if kind == "COPY" and rest.startswith("app"))
    dependency_install = next(i for i, (kind, rest) in enumerate(steps) if kind == "RUN" and "lock ." in rest)
    assert copies[0].startswith("pyproject.toml")
    assert dependency_install < first_code  # dependencies before code
    user = [rest for kind, rest in steps if kind == "USER"]
    assert user
    assert not user[-1].startswith(("0", "root"))  # non-root
    assert kinds.index("USER") < kinds.index("CMD")
    assert "HEALTHCHECK" in kinds
    assert "/healthz" in steps[kinds.index("HEALTHCHECK")][1]
    assert json.loads(steps[kinds.index("ENTRYPOINT")][1]) == ["parafeed"]  # exec form
    cmd = json.loads(steps[kinds.index("CMD")][1])
    assert cmd[0] == "serve"


def test_compose_runs_a_proxy_api_redis_and_workers_from_one_image() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"proxy", "api", "redis", "worker"} <= set(services)
    assert services["api"]["image"] == services["worker"]["image"]
    assert services["api"]["command"][0] == "serve"
    assert "--redis-url" in services["api"]["command"]
    assert services["worker"]["command"][0] == "worker"
    assert "ports" not in services["api"]  # reached through the proxy only
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for port in published)
    assert "PARAFEED_WORKERS_PER_HOST" in services["worker"]["environment"]  # threads: cores over workers
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "client_max_body_size", "limit_conn"):
        assert directive in config


def test_the_image_installs_the_locked_versions() -> None:
    """Every runtime dependency of pyproject.toml is pinned exactly in requirements.lock, which the image uses."""
    import tomllib

    from packaging.requirements import Requirement

    locked = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        requirement = Requirement(text)
        if requirement.name != "torch" and (requirement.marker is None or requirement.marker.evaluate()):
            assert requirement.name.lower() in locked, requirement.name
            assert requirement.specifier.contains(locked[requirement.name.lower()]), requirement
    installs = [rest for kind, rest in instructions() if kind == "RUN" and "pip install" in rest]
    assert installs
    assert all("-c requirements.lock" in rest for rest in installs)


def test_the_image_contains_what_serving_needs() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("app", "models", "samplers", "solvers", "pyproject.toml"):
        assert needed not in ignored
    assert ".venv" in ignored
