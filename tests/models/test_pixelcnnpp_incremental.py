"""The incremental PixelCNN++ layout: ready maps that prove the autoregressive property, the same function as the
reference map, and samplers (incremental sequential, windowed Jacobi) that reach the sequential sample."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig
from models.pixelcnnpp_graph import PixelGraph
from models.pixelcnnpp_incremental import IncrementalPixelCNNpp
from models.pixelcnnpp_window import WindowedPixelJacobi
from samplers.engine import Engine
from samplers.sampling import sample
from samplers.work import solve_system
from solvers.pieces import drain

PARAM_TOL = 1e-4  # |incremental - reference| mixture parameters: float32 sums in other shapes (measured ~4e-6)


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


def tiny(channels: int, seed: int = 0) -> PixelCNNpp:
    torch.manual_seed(seed)
    config = PixelCNNppConfig(channels=channels, image_size=12, nr_resnet=1, nr_filters=8, nr_mix=3)
    return PixelCNNpp(config).eval()


def test_ready_maps_prove_the_output_sees_only_earlier_pixels() -> None:
    graph = PixelGraph(tiny(1))
    out = graph.nodes[-1].ready
    assert (out <= np.arange(144).reshape(12, 12)).all()
    assert out[0, 0] == 0  # pixel 0 reads nothing
    assert out[0, 1] == 1  # pixel 1 reads pixel 0, and only it
    assert graph.nodes[0].ready[-1, -1] == 144


@pytest.mark.parametrize("channels", [1, 3])
def test_the_layout_computes_the_forward_to_float32_rounding(channels: int) -> None:
    model = tiny(channels, seed=channels)
    images = torch.rand(3, channels, 12, 12, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(IncrementalPixelCNNpp(model).params(images), model(images), rtol=0, atol=PARAM_TOL)


def test_the_shipped_model_is_reproduced_to_the_stated_tolerance() -> None:
    engine = Engine("cpu")
    system = engine.sampling_system("pixelcnnpp-fmnist")
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        reference = system.banded(images, system.banded.new_cache(2), torch.arange(2), 0, system.banded.bands)
        assert float((system.layout().params(images) - reference).abs().max()) < PARAM_TOL


@pytest.mark.parametrize("model", ["pixelcnnpp-tiny", "pixelcnnpp-rgb-tiny"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("seed", [0, 3])
def test_incremental_sampling_equals_the_reference_sampler(engine: Engine, model: str, batch: int, seed: int) -> None:
    system = engine.sampling_system(model)
    with torch.inference_mode():
        noise = system.draw_noise(seed, range(batch))
        candidate = drain(system.layout().sample(noise, piece=7))
        reference = solve_system(system, noise, "sequential_naive").result.x
    assert torch.equal(candidate, reference)


@pytest.mark.parametrize("window", [1, 5, 16, 64, 1000])
@pytest.mark.parametrize("batch", [1, 4])
def test_windowed_jacobi_reaches_the_sequential_sample(engine: Engine, window: int, batch: int) -> None:
    system = engine.sampling_system("pixelcnnpp-tiny")
    pixels = system.unknowns
    with torch.inference_mode():
        noise = system.draw_noise(window, range(batch))
        x, iterations = drain(WindowedPixelJacobi(system.layout(), window).solve(noise))
        reference = solve_system(system, noise, "sequential_naive").result.x
    assert torch.equal(x, reference)
    assert max(iterations) <= pixels
    if window == 1:
        assert iterations == [pixels] * batch


def test_pooled_buffers_start_clean(engine: Engine) -> None:
    sampler = engine.sampling_system("pixelcnnpp-tiny").layout()
    noise = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        first = drain(sampler.sample(noise))
        drain(sampler.sample(torch.rand_like(noise)))
        assert torch.equal(drain(sampler.sample(noise)), first)


@pytest.mark.parametrize("method", ["sequential", "jacobi_window"])
def test_served_fast_paths_are_certified_and_equal_the_reference(engine: Engine, method: str) -> None:
    body = sample(engine, "pixelcnnpp-rgb-tiny", 3, method, seed=4, block_size=20, verify=True)
    reference = sample(engine, "pixelcnnpp-rgb-tiny", 3, "sequential_naive", seed=4)
    assert body.samples == reference.samples
    assert (body.exactness, body.repaired, body.verified) == ("certified", 0, True)


def test_a_wrong_incremental_candidate_is_repaired(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = sample(engine, "pixelcnnpp-tiny", 3, "sequential_naive", seed=6)
    original = IncrementalPixelCNNpp.sample

    def wrong(self: IncrementalPixelCNNpp, noise: torch.Tensor, piece: int = 28) -> Iterator[None]:
        x = yield from original(self, noise, piece)
        x = x.clone()
        x[1, 9] = (x[1, 9] + 128) % 256  # a wrong pixel: every later one may change
        return x

    monkeypatch.setattr(IncrementalPixelCNNpp, "sample", wrong)
    body = sample(engine, "pixelcnnpp-tiny", 3, "sequential", seed=6, verify=True)
    assert body.samples == reference.samples
    assert (body.exactness, body.repaired, body.verified) == ("repaired", 1, True)
    assert body.iterations[1] > body.iterations[0] == 64 + 1


def test_interleaved_samplings_of_one_batch_size_each_hold_their_own_buffers(engine: Engine) -> None:
    sampler = engine.sampling_system("pixelcnnpp-tiny").layout()
    a, b = (torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (2, 3))
    with torch.inference_mode():
        alone = [drain(sampler.sample(a)), drain(sampler.sample(b))]
        first, second = sampler.sample(a, piece=3), sampler.sample(b, piece=5)
        results: list[torch.Tensor | None] = [None, None]
        while any(r is None for r in results):  # as the worker interleaves two jobs' pieces
            for k, generator in enumerate((first, second)):
                if results[k] is None:
                    try:
                        next(generator)
                    except StopIteration as stop:
                        results[k] = stop.value
    assert torch.equal(results[0], alone[0])
    assert torch.equal(results[1], alone[1])
