"""The command line runs the real engine and prints exactly the HTTP bodies with --json."""

import json
from pathlib import Path

import pytest
from PIL import Image

from app.cli import main
from tests.fixtures.registries import build_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("cli-registry"))


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_quick_writes_json_and_png(tmp_path: Path) -> None:
    assert main(["bench", "--quick", "--only", "synthetic", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "synthetic-quick.json").read_text())
    assert (tmp_path / "synthetic-quick.png").stat().st_size > 10_000
    by_key = {(r["system"], r["method"]): r for r in payload["results"]}
    assert all(r["equal_fraction"] == 1.0 for r in payload["results"])
    assert by_key[("counter", "jacobi")]["evaluations"] == payload["config"]["length"]
    assert by_key[("made-bernoulli", "jacobi")]["evaluations"] < payload["config"]["length"]


def test_models_lists_the_catalog(capsys: pytest.CaptureFixture[str], registry: Path) -> None:
    models = run_json(capsys, "models", "--json", "--registry", str(registry))
    assert isinstance(models, list)
    by_name = {m["name"]: m for m in models}
    assert by_name["made-tiny"]["kind"] == "sampler"
    assert by_name["made-tiny"]["sequential_steps"] == 64
    assert set(by_name["made-tiny"]) == {"name", "kind", "shape", "sequential_steps", "methods", "tasks", "description"}


def test_sample_json_is_the_http_body_and_methods_agree(
    capsys: pytest.CaptureFixture[str], registry: Path, tmp_path: Path
) -> None:
    common = ["-n", "6", "--seed", "1", "--json", "--registry", str(registry)]
    sequential = run_json(capsys, "sample", "pixelcnnpp-tiny", "--method", "sequential", *common)
    out = tmp_path / "grid.png"
    jacobi = run_json(capsys, "sample", "pixelcnnpp-tiny", "--method", "jacobi", "--verify", "--out", str(out), *common)
    assert isinstance(sequential, dict)
    assert isinstance(jacobi, dict)
    assert jacobi["samples"] == sequential["samples"]
    assert jacobi["verified"] is True
    assert jacobi["shape"] == [6, 1, 8, 8]
    assert {"model", "method", "seed", "iterations", "sequential_steps", "converged", "timings_ms"} <= set(jacobi)
    assert Image.open(out).size[0] > 8


def test_bad_input_is_one_line_on_stderr_and_status_2(capsys: pytest.CaptureFixture[str], registry: Path) -> None:
    assert main(["sample", "no-such-model", "--registry", str(registry)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err
    assert "Traceback" not in err
    assert main(["sample", "pixelcnnpp-tiny", "--method", "jacobi_split", "--registry", str(registry)]) == 2


def test_images_writes_a_grid(tmp_path: Path) -> None:
    out = tmp_path / "test.png"
    assert main(["images", "-n", "16", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))


def test_gradient_and_infer_json(capsys: pytest.CaptureFixture[str], registry: Path) -> None:
    common = ["--batch", "3", "--seed", "3", "--json", "--registry", str(registry)]
    scan = run_json(capsys, "gradient", "rnn-tiny", "--method", "scan", *common)
    sequential = run_json(capsys, "gradient", "rnn-tiny", "--method", "sequential", *common)
    assert isinstance(scan, dict)
    assert isinstance(sequential, dict)
    for name, grad in scan["gradients"].items():
        other = sequential["gradients"][name]["data"]
        assert max(abs(a - b) for a, b in zip(grad["data"], other, strict=True)) <= 1e-5
    infer = run_json(capsys, "infer", "densenet-tiny", "--method", "jacobi", "--verify", *common)
    assert isinstance(infer, dict)
    assert infer["verified"]["equal"] is True
    assert len(infer["predictions"]) == 3
