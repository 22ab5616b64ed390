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
    methods = engine.sampling_system(name).methods
    naive = "sequential_naive" if "sequential_naive" in methods else "sequential"  # the reference sampler
    reference = sample(engine, name, num_samples=5, method=naive, seed=seed)
    assert reference.iterations == [reference.sequential_steps] * 5
    assert reference.exactness == "sequential"
    assert set(METHODS) <= set(methods)
    for method in methods:
        body = sample(engine, name, num_samples=5, method=method, seed=seed, verify=True)
        assert body.samples == reference.samples, method
        assert body.verified is True
        assert body.converged is True
        assert body.exactness in ("sequential", "fixed point", "certified", "repaired")
        assert max(body.iterations) <= body.sequential_steps + 1  # a fast path: its depth, then one certificate


@pytest.mark.parametrize("name", NAMES)
def test_sample_i_is_independent_of_batch_size_and_composition(engine: Engine, name: str) -> None:
    system = engine.sampling_system(name)
    from samplers.work import solve_system

    with torch.inference_mode():
        full = solve_system(system, system.draw_noise(7, range(9)), "jacobi").samples
        for indices in ([4], [8, 0, 3], [2, 5, 6, 7]):
            part = solve_system(system, system.draw_noise(7, indices), "gs_jacobi").samples
            assert torch.equal(part, full[indices])


def test_seed_is_echoed_and_random_when_missing(engine: Engine) -> None:
    a = sample(engine, "made-tiny", num_samples=2, method="jacobi")
    b = sample(engine, "made-tiny", num_samples=2, method="jacobi", seed=a.seed)
    assert a.samples == b.samples


@pytest.mark.parametrize("model", ["pixelcnnpp-tiny", "made-tiny"])
def test_auto_picks_an_exact_method_and_says_which(engine: Engine, model: str) -> None:
    body = sample(engine, model, num_samples=3, method="auto", seed=3, verify=True)
    assert body.method in engine.sampling_system(model).methods  # resolved to one of the model's own methods
    assert body.verified is True
    assert body.exactness in ("sequential", "fixed point", "certified", "repaired")


def test_auto_follows_the_measured_table(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from samplers import auto
    from samplers.auto import Choice

    monkeypatch.setattr(auto, "TABLE", tmp_path / "auto.json")
    auto._table.cache_clear()
    try:
        assert auto.pick("made", "cpu", fallback="jacobi") == Choice("jacobi")  # nothing measured: exact fallback
        assert engine.resolve("rnn-tiny", "gradient", "auto") == Choice("sequential")
        auto.record({"made": Choice("gs_jacobi", 56), "rnn-gradient": Choice("scan")}, "cpu")
        auto.record({"made": Choice("jacobi")}, "cuda")  # another device keeps the first one's entries
        assert auto.pick("made", "cpu", fallback="jacobi") == Choice("gs_jacobi", 56)
        assert engine.resolve("rnn-tiny", "gradient", "auto") == Choice("scan")
        body = sample(engine, "made-tiny", num_samples=2, method="auto", seed=1)
        assert body.method == "gs_jacobi"
        assert engine.resolve("rnn-tiny", "gradient", "jacobi") == Choice("jacobi")  # explicit: never replaced
    finally:
        auto._table.cache_clear()


def test_truncated_sampling_says_it_did_not_converge(engine: Engine) -> None:
    body = sample(engine, "made-tiny", num_samples=3, method="jacobi", seed=1, max_iterations=1)
    assert body.converged is False
    assert body.iterations == [1, 1, 1]


def test_png_format_returns_base64_images(engine: Engine) -> None:
    import base64

    body = sample(engine, "pixelcnnpp-rgb-tiny", num_samples=2, method="jacobi", seed=1, output_format="png")
    assert len(body.samples) == 2
    assert base64.b64decode(body.samples[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_classifier_cannot_be_sampled(engine: Engine, tiny_registry: Path) -> None:
    with pytest.raises(KeyError):
        engine.sampling_system("nope")
    engine.entries["fake-densenet"] = engine.entries["made-tiny"].__class__(
        "fake-densenet", "densenet", "x", "0", {}, description=""
    )
    with pytest.raises(WrongKindError):
        engine.sampling_system("fake-densenet")
    del engine.entries["fake-densenet"]


def test_pixelcnnpp_caching_changes_the_work_not_the_answer() -> None:
    """On a 4-band model: cached and uncached systems give the same samples for every method."""
    from benchmarks.baselines import UncachedPixelCNNpp
    from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig
    from samplers.families.pixelcnnpp import PixelCNNppSystem
    from samplers.work import solve_system

    torch.manual_seed(4)
    model = PixelCNNpp(PixelCNNppConfig(image_size=16, nr_resnet=1, nr_filters=8, nr_mix=3)).eval()
    cached, uncached = PixelCNNppSystem(model, "m"), UncachedPixelCNNpp(model, "m")
    with torch.inference_mode():
        noise = cached.draw_noise(5, range(4))
        reference = solve_system(uncached, noise, "sequential").samples
        for method in METHODS:
            for system in (cached, uncached):
                assert torch.equal(solve_system(system, noise, method).samples, reference), method


def test_split_iteration_needs_fewer_passes_than_jacobi(engine: Engine) -> None:
    jacobi = sample(engine, "made-tiny", num_samples=8, method="jacobi", seed=11)
    split = sample(engine, "made-tiny", num_samples=8, method="jacobi_split", seed=11)
    assert split.samples == jacobi.samples
    assert sum(split.iterations) < sum(jacobi.iterations)


def test_unknown_method_for_a_family_is_named(engine: Engine) -> None:
    with pytest.raises(ValueError, match="jacobi_split"):
        sample(engine, "pixelcnnpp-tiny", num_samples=1, method="jacobi_split", seed=1)


def test_direct_sums_are_exact_in_any_order() -> None:
    """Fixed-point direct weights: the same sum whatever the GEMM shape, batch or split of the inputs."""
    from models.made import MADE, MADEConfig

    torch.manual_seed(0)
    made = MADE(MADEConfig(input_size=784, hidden_sizes=(16, 16))).eval()
    with torch.no_grad():
        made.direct.weight.normal_(0.0, 4.0)
    x = torch.bernoulli(torch.full((37, 784), 0.5))
    w = made.direct_weight()
    full = made.direct_sum(x)
    assert torch.equal(made.direct_sum(x[5:6]), full[5:6])
    halves = x[:, :400] @ w[:, :400].T + x[:, 400:] @ w[:, 400:].T
    assert torch.equal(halves, full)
    assert torch.equal((x.double() @ w.double().T).float(), full)  # and equal to the exact (float64) sum
