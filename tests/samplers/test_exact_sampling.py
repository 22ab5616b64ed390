"""Every method draws bit for bit the sequential sample; a sample depends only on (model, seed, i)."""

from pathlib import Path

import pytest
import torch

from samplers.engine import Engine, WrongKindError
from samplers.sampling import sample
from solvers import METHODS

NAMES = ["made-tiny", "pixelcnnpp-tiny", "pixelcnnpp-rgb-tiny"]


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_method_equals_sequential(engine: Engine, name: str, seed: int) -> None:
    reference = sample(engine, name, num_samples=5, method="sequential", seed=seed)
    assert reference["iterations"] == [reference["sequential_steps"]] * 5
    for method in METHODS:
        body = sample(engine, name, num_samples=5, method=method, seed=seed, verify=True)
        assert body["samples"] == reference["samples"], method
        assert body["verified"] is True
        assert body["converged"] is True
        assert max(body["iterations"]) <= body["sequential_steps"]


@pytest.mark.parametrize("name", NAMES)
def test_sample_i_is_independent_of_batch_size_and_composition(engine: Engine, name: str) -> None:
    system = engine.sampling_system(name)
    from samplers.system import solve_system

    with torch.inference_mode():
        full = solve_system(system, system.draw_noise(7, range(9)), "jacobi").samples
        for indices in ([4], [8, 0, 3], [2, 5, 6, 7]):
            part = solve_system(system, system.draw_noise(7, indices), "gs_jacobi").samples
            assert torch.equal(part, full[indices])


def test_seed_is_echoed_and_random_when_missing(engine: Engine) -> None:
    a = sample(engine, "made-tiny", num_samples=2, method="jacobi")
    b = sample(engine, "made-tiny", num_samples=2, method="jacobi", seed=a["seed"])
    assert a["samples"] == b["samples"]


def test_auto_picks_an_exact_method_and_says_which(engine: Engine) -> None:
    body = sample(engine, "pixelcnnpp-tiny", num_samples=3, method="auto", seed=3, verify=True)
    assert body["method"] in METHODS
    assert body["verified"] is True


def test_truncated_sampling_says_it_did_not_converge(engine: Engine) -> None:
    body = sample(engine, "made-tiny", num_samples=3, method="jacobi", seed=1, max_iterations=1)
    assert body["converged"] is False
    assert body["iterations"] == [1, 1, 1]


def test_png_format_returns_base64_images(engine: Engine) -> None:
    import base64

    body = sample(engine, "pixelcnnpp-rgb-tiny", num_samples=2, method="jacobi", seed=1, output_format="png")
    assert len(body["samples"]) == 2
    assert base64.b64decode(body["samples"][0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_classifier_cannot_be_sampled(engine: Engine, tiny_registry: Path) -> None:
    with pytest.raises(KeyError):
        engine.sampling_system("nope")
    engine.entries["fake-densenet"] = engine.entries["made-tiny"].__class__(
        "fake-densenet", "densenet", "x", "0", {}, description=""
    )
    with pytest.raises(WrongKindError):
        engine.sampling_system("fake-densenet")
    del engine.entries["fake-densenet"]
