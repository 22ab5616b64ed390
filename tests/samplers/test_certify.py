"""Fast paths and certificates: the degree-ordered sampler's candidates, certified by one evaluation of the
reference map; a wrong candidate is repaired by Jacobi to exactly the sequential sample."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.made import MADE, MADEConfig
from models.made_degrees import DegreeOrder
from samplers.certify import certificate_exactness, certificate_rows, certified
from samplers.engine import Engine
from samplers.sampling import sample
from samplers.work import solve_rows, solve_system
from solvers.pieces import drain

LOGIT_TOL = 1e-4  # |incremental - reference| logits: float32 sums in another order (measured ~1e-6 on shipped)


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


@pytest.fixture(scope="module")
def shipped() -> Engine:
    return Engine("cpu")


def reference_logits(model: MADE, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("seed", [0, 7])
def test_degree_order_equals_the_reference_sampler(engine: Engine, batch: int, seed: int) -> None:
    system = engine.sampling_system("made-tiny")
    with torch.inference_mode():
        noise = system.draw_noise(seed, range(batch))
        x, logits = drain(DegreeOrder(system.model).sample(noise, piece=5))
        reference = solve_system(system, noise, "sequential_naive").result.x
    assert torch.equal(x, reference)
    assert torch.allclose(logits, reference_logits(system.model, x), atol=LOGIT_TOL, rtol=0)


@pytest.mark.parametrize("hidden", [(40,), (24, 30, 20)])
def test_degree_order_handles_any_number_of_hidden_layers(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    model = MADE(MADEConfig(input_size=36, hidden_sizes=hidden, image_shape=(1, 6, 6))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    noise = torch.rand(5, 36)
    with torch.inference_mode():
        x, logits = drain(DegreeOrder(model).sample(noise))
        for t in range(36):  # the reference: one masked forward per pixel
            assert torch.equal(x[:, t], (noise[:, t] < torch.sigmoid(model(x)[:, t])).float())
    assert torch.allclose(logits, reference_logits(model, x), atol=LOGIT_TOL, rtol=0)


def test_degree_order_on_the_shipped_made_reproduces_logits(shipped: Engine) -> None:
    system = shipped.sampling_system("made-fmnist")
    with torch.inference_mode():
        noise = system.draw_noise(3, range(16))
        x, logits = drain(system.degree_order().sample(noise))
        reference = solve_system(system, noise, "jacobi").result.x
    assert torch.equal(x, reference)
    assert float((logits - reference_logits(system.model, x)).abs().max()) < LOGIT_TOL


def test_work_is_about_one_forward(shipped: Engine) -> None:
    order = shipped.sampling_system("made-fmnist").degree_order()
    forward = sum(layer.weight.numel() for layer in order_model(shipped).layers) + 784 * 784
    assert order.macs() < 0.7 * forward  # each unit once, over the prefix it reads (masked zeros mostly skipped)


def order_model(engine: Engine) -> MADE:
    model = engine.model("made-fmnist")
    assert isinstance(model, MADE)
    return model


def test_a_wrong_candidate_is_repaired_exactly(engine: Engine) -> None:
    system = engine.sampling_system("made-tiny")
    with torch.inference_mode():
        noise = system.draw_noise(4, range(6))
        reference = solve_system(system, noise, "sequential_naive").result.x
        candidate = reference.clone()
        candidate[1, 10] = 1 - candidate[1, 10]  # a wrong bit: every later position may change
        candidate[4, 0] = 1 - candidate[4, 0]
        result = solve_rows(certificate_rows(system, noise, candidate))
    assert torch.equal(result.x, reference)
    from samplers.work import Solved

    solved = Solved(result.x, result.iterations.tolist(), result.converged.tolist())
    assert certified(solved) == [True, False, True, True, False, True]
    assert certificate_exactness(solved) == ("repaired", 2)


def test_the_served_fast_path_repairs_what_fails(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = sample(engine, "made-tiny", 4, "sequential_naive", seed=9)
    original = DegreeOrder.sample

    def wrong(self: DegreeOrder, noise: torch.Tensor, piece: int = 56) -> Iterator[None]:
        x, logits = yield from original(self, noise, piece)
        x = x.clone()
        x[2, 5] = 1 - x[2, 5]
        return x, logits

    monkeypatch.setattr(DegreeOrder, "sample", wrong)
    body = sample(engine, "made-tiny", 4, "sequential", seed=9, verify=True)
    assert body.samples == reference.samples
    assert (body.exactness, body.repaired) == ("repaired", 1)
    assert body.verified is True
    assert body.iterations[2] > body.iterations[0] == 64 + 1


def test_the_fast_path_says_it_was_certified(engine: Engine) -> None:
    body = sample(engine, "made-tiny", 5, "sequential", seed=2)
    assert (body.exactness, body.repaired, body.converged) == ("certified", 0, True)
    assert body.iterations == [64 + 1] * 5  # 64 incremental steps, then one evaluation of the reference map
    assert body.samples == sample(engine, "made-tiny", 5, "sequential_naive", seed=2).samples


def test_verify_is_one_certificate_evaluation(engine: Engine) -> None:
    body = sample(engine, "made-tiny", 3, "jacobi", seed=5, verify=True)
    assert body.verified is True
    assert body.verified_per_sample == [True] * 3
    assert body.exactness == "fixed point"
    capped = sample(engine, "made-tiny", 3, "jacobi", seed=5, max_iterations=2, verify=True)
    assert capped.exactness == "not converged"
    assert capped.verified is False  # two Jacobi evaluations are not the sequential sample


@pytest.mark.parametrize("window", [1, 5, 16, 64, 200])
@pytest.mark.parametrize("batch", [1, 6])
def test_windowed_jacobi_reaches_the_sequential_sample(engine: Engine, window: int, batch: int) -> None:
    from models.made_window import WindowedJacobi

    system = engine.sampling_system("made-tiny")
    with torch.inference_mode():
        noise = system.draw_noise(window, range(batch))
        x, iterations, steps = drain(WindowedJacobi(system.degree_order(), window).solve(noise))
        reference = solve_system(system, noise, "sequential_naive").result.x
    assert torch.equal(x, reference)
    assert max(iterations) == len(steps) <= 64 + 1
    assert all(e - g <= window for g, e in steps)


def test_windowed_jacobi_is_served_certified(engine: Engine) -> None:
    body = sample(engine, "made-tiny", 4, "jacobi_window", seed=11, block_size=16, verify=True)
    assert body.samples == sample(engine, "made-tiny", 4, "sequential_naive", seed=11).samples
    assert body.exactness == "certified"
    assert body.verified is True


def test_solve_system_runs_a_fast_path_and_reports_its_certificate(engine: Engine) -> None:
    system = engine.sampling_system("made-tiny")
    with torch.inference_mode():
        noise = system.draw_noise(1, range(3))
        fast = solve_system(system, noise, "sequential")
        reference = solve_system(system, noise, "sequential_naive")
    assert torch.equal(fast.samples, reference.samples)
    assert fast.certificate is not None
    assert fast.certificate.tolist() == [1, 1, 1]
    assert fast.result.iterations.tolist() == [65, 65, 65]
