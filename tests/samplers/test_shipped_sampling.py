"""The shipped samplers: every method draws bit for bit the sequential sample (several seeds, real weights)."""

import pytest
import torch

from samplers.engine import Engine
from samplers.sampling import sample
from samplers.work import solve_system


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine("cpu")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_made_every_method_equals_sequential(engine: Engine, seed: int) -> None:
    reference = sample(engine, "made-fmnist", 8, "sequential_naive", seed)
    for method in ("sequential", "jacobi", "jacobi_split", "jacobi_gs", "gs_jacobi"):
        body = sample(engine, "made-fmnist", 8, method, seed)
        assert body.samples == reference.samples, method
        assert body.converged is True
        assert max(body.iterations) <= 785


def test_made_sample_i_does_not_depend_on_the_batch(engine: Engine) -> None:
    system = engine.sampling_system("made-fmnist")
    with torch.inference_mode():
        full = solve_system(system, system.draw_noise(5, range(40)), "jacobi_split").samples
        for indices in ([0], [39, 7], list(range(3, 20))):
            part = solve_system(system, system.draw_noise(5, indices), "jacobi").samples
            assert torch.equal(part, full[indices])


@pytest.mark.parametrize(("seed", "methods"), [(0, ("jacobi", "gs_jacobi", "jacobi_gs")), (1, ("jacobi",))])
def test_pixelcnnpp_methods_equal_the_cached_sequential_sampler(engine: Engine, seed: int, methods: tuple) -> None:
    reference = sample(engine, "pixelcnnpp-fmnist", 2, "sequential", seed)
    for method in methods:
        body = sample(engine, "pixelcnnpp-fmnist", 2, method, seed, block_size=112 if method == "gs_jacobi" else None)
        assert body.samples == reference.samples, method
        assert max(body.iterations) < 784


def test_pixelcnnpp_sample_i_does_not_depend_on_the_batch(engine: Engine) -> None:
    system = engine.sampling_system("pixelcnnpp-fmnist")
    with torch.inference_mode():
        together = solve_system(system, system.draw_noise(9, range(3)), "gs_jacobi", block_size=112).samples
        alone = solve_system(system, system.draw_noise(9, [2]), "jacobi").samples
    assert torch.equal(alone[0], together[2])
