"""Your own autoregressive model, served by plugin: sampled exactly by every method, refused when it peeks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import config_to_dict, save_model, sha256
from models.registry import Entry, write_manifest
from samplers.engine import Engine
from samplers.plugins import NotAutoregressiveError
from samplers.sampling import sample
from tests.samplers.plugin_models import Toy, ToyConfig

PLUGINS = [f"tests.samplers.plugin_models:{name}" for name in ("TOY", "PEEKING", "FLAT")]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plugin-registry")
    torch.manual_seed(0)
    entries = {}
    for name, kind, config in (("toy", "toy-ar", ToyConfig()), ("peeker", "toy-peeking", ToyConfig(peek=True)),
                               ("flat", "toy-flat", ToyConfig(flat=True))):  # fmt: skip
        path = directory / f"{name}.safetensors"
        save_model(Toy(config), kind, config, path)
        entries[name] = Entry(name, kind, path.name, sha256(path), config_to_dict(config), description=f"a {kind}")
    write_manifest(entries, directory)
    return directory


@pytest.fixture(scope="module")
def engine(registry: Path) -> Engine:
    return Engine("cpu", registry, plugins=PLUGINS)


def test_a_plugin_model_is_listed_like_a_shipped_one(engine: Engine) -> None:
    info = engine.info("toy")
    assert (info.kind, info.shape, info.sequential_steps) == ("sampler", [1, 4, 4], 16)
    assert info.tasks == {"sample": ["sequential", "jacobi", "jacobi_gs", "gs_jacobi", "auto"]}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_method_draws_the_sequential_sample(engine: Engine, seed: int) -> None:
    reference = sample(engine, "toy", 6, "sequential", seed)
    assert reference.iterations == [16] * 6
    for method in ("jacobi", "jacobi_gs", "gs_jacobi", "auto"):
        body = sample(engine, "toy", 6, method, seed, verify=True)
        assert body.samples == reference.samples, method
        assert body.verified is True
        assert max(body.iterations) <= 16
    assert sample(engine, "toy", 3, "jacobi", seed).samples == reference.samples[:3]  # batch-independent


def test_a_model_that_peeks_at_its_own_position_is_refused_with_the_position(engine: Engine) -> None:
    with pytest.raises(NotAutoregressiveError, match=r"output (\d+) has a nonzero gradient .* input \1\b"):
        engine.system("peeker")
    with pytest.raises(NotAutoregressiveError):
        sample(engine, "peeker", 1, "jacobi", 0)


def test_a_model_with_the_wrong_output_shape_is_refused(engine: Engine) -> None:
    with pytest.raises(NotAutoregressiveError, match=r"logits of shape \(16, 16, 3\)"):
        engine.system("flat")


def test_a_perturbation_probe_catches_what_gradients_cannot_see() -> None:
    """An output that reads a later input through a non-differentiable path (rounding) has zero gradient there."""
    from samplers.plugins import check_autoregressive
    from tests.samplers.plugin_models import TOY

    class Sneaky(Toy):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = super().forward(x)
            return logits + torch.round(x.detach()).roll(-1, dims=1)[..., None]  # position t sees x_{t+1}

    with pytest.raises(NotAutoregressiveError, match="changed"):
        check_autoregressive(Sneaky(ToyConfig()), TOY, "sneaky")


def test_a_plugin_name_must_point_at_a_model_declaration() -> None:
    with pytest.raises(ValueError, match="module:NAME"):
        Engine("cpu", plugins=["tests.samplers.plugin_models"])
    with pytest.raises(TypeError, match="AutoregressiveModel"):
        Engine("cpu", plugins=["tests.samplers.plugin_models:Toy"])
