"""/infer and /gradient bodies from the engine: methods agree, exactness is reported honestly."""

from pathlib import Path

import pytest
import torch

from samplers.engine import Engine
from samplers.inputs import WrongKindError


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


def test_densenet_jacobi_is_bitwise_the_sequential_forward(engine: Engine) -> None:
    common = {"model": "densenet-tiny", "batch": 5, "seed": 3}
    sequential = engine.call("infer", method="sequential", **common)
    jacobi = engine.call("infer", method="jacobi", verify=True, **common)
    assert jacobi.outputs == sequential.outputs
    assert jacobi.verified.equal is True
    assert jacobi.exact is True
    assert max(jacobi.iterations) <= jacobi.sequential_steps
    assert jacobi.predictions == torch.tensor(sequential.outputs).argmax(1).tolist()
    assert jacobi.sequential_steps == engine.info("densenet-tiny").sequential_steps  # /models says what /infer does


def test_tolerance_and_truncation_are_not_called_exact(engine: Engine) -> None:
    common = {"model": "densenet-tiny", "batch": 3, "seed": 4, "method": "jacobi"}
    loose = engine.call("infer", tol=1e-2, **common)
    assert loose.exact is False
    cut = engine.call("infer", max_iterations=2, **common)
    assert cut.exact is False
    assert cut.converged is False
    assert cut.residual > 0


@pytest.mark.parametrize("name", ["rnn-tiny", "gru-tiny", "orthogonal-tiny"])
@pytest.mark.parametrize("batch", [1, 3, 4, 9])
@pytest.mark.parametrize("method", ["jacobi", "gs_jacobi"])
def test_sequence_inference_by_the_solvers_is_bitwise_the_loop(
    engine: Engine, name: str, batch: int, method: str
) -> None:
    body = engine.call("infer", model=name, batch=batch, seed=1, method=method, verify=True)
    sequential = engine.call("infer", model=name, batch=batch, seed=1, method="sequential")
    assert body.exact is True
    assert body.verified.model_dump() == {"max_abs_diff": 0.0, "equal": True}
    assert body.outputs == sequential.outputs
    assert max(body.iterations) <= body.sequential_steps


@pytest.mark.parametrize("name", ["rnn-tiny", "gru-tiny", "orthogonal-tiny"])
@pytest.mark.parametrize("method", ["newton", "mgrit"])
def test_newton_and_mgrit_inference_end_bitwise_on_the_loop(engine: Engine, name: str, method: str) -> None:
    """Newton's candidate is certified (repaired) by Jacobi; MGRIT terminates exactly: both are the loop's bits."""
    body = engine.call("infer", model=name, batch=3, seed=2, method=method, verify=True)
    sequential = engine.call("infer", model=name, batch=3, seed=2, method="sequential")
    assert body.exact is True
    assert body.converged is True
    assert body.residual == 0.0
    assert body.verified.model_dump() == {"max_abs_diff": 0.0, "equal": True}
    assert body.outputs == sequential.outputs


def test_newton_to_a_tolerance_reports_its_difference() -> None:
    """With tol > 0 Newton stops near the fixed point: not exact, residual and difference to the loop both small."""
    from models.rnn import RecurrentRegressor, RNNConfig
    from samplers.chains import newton_forward
    from samplers.families.recurrent import forward_pieces
    from solvers import drain

    torch.manual_seed(0)
    model = RecurrentRegressor(RNNConfig(cell="orthogonal", hidden_size=8, image_size=10)).eval()  # T = 100
    x = torch.rand(2, 100)
    with torch.no_grad():
        reference = model(x)
        predictions, iterations, converged, residual = drain(
            newton_forward(model, x, 1e-5, lambda start: forward_pieces(model, x, "jacobi", 1e-5, start=start))
        )
    assert converged
    assert 0 < residual <= 1e-4
    assert max(iterations) <= 12  # Newton updates plus one confirming Jacobi evaluation, not T = 100
    assert float((predictions - reference).abs().max()) < 1e-4


def test_windowed_inference_evaluates_only_its_window() -> None:
    """gs_jacobi on a long sequence: the same states as the loop, from far fewer cell evaluations than Jacobi."""
    from models.rnn import RecurrentRegressor, RNNConfig
    from samplers.families.recurrent import forward_solve

    torch.manual_seed(0)
    model = RecurrentRegressor(RNNConfig(cell="gru", hidden_size=8, image_size=12)).eval()  # T = 144
    x = torch.rand(3, 144)
    cells: list[int] = []
    original = model.cell

    def counted(x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        cells.append(x_t.shape[0])
        return original(x_t, h)

    model.cell = counted  # type: ignore[method-assign]
    with torch.inference_mode():
        expected = model.predict(model.hidden_states(x))
        cells.clear()
        jacobi, *_ = forward_solve(model, x, "jacobi")
        jacobi_cells, cells[:] = sum(cells), []
        window, *_ = forward_solve(model, x, "gs_jacobi")
    assert torch.equal(jacobi, expected)
    assert torch.equal(window, expected)
    assert max(cells) <= 3 * 12  # a window of ceil(sqrt(T)) = 12 states per sequence
    assert sum(cells) < jacobi_cells / 2


@pytest.mark.parametrize("name", ["rnn-tiny", "gru-tiny", "orthogonal-tiny"])
def test_gradient_bodies_agree_with_autograd(engine: Engine, name: str) -> None:
    for method in ("scan", "jacobi"):
        body = engine.call("gradient", model=name, batch=3, seed=2, method=method, verify=True)
        assert body.exact is True
        assert body.verified.max_abs_diff <= 1e-5
        assert set(body.gradients) == {n for n, _ in engine.model(name).named_parameters()}
    cut = engine.call("gradient", model=name, batch=3, seed=2, method="jacobi", max_iterations=2)
    assert cut.exact is False
    assert cut.iterations == 2


def test_explicit_inputs_give_the_same_answer_as_the_test_set_they_came_from(engine: Engine) -> None:
    x = engine.test_inputs("rnn-tiny", 2, seed=5)
    drawn = engine.call("gradient", model="rnn-tiny", batch=2, seed=5, method="scan")
    given = engine.call("gradient", model="rnn-tiny", inputs=x.tolist(), method="scan")
    assert given.gradients == drawn.gradients


def test_wrong_kinds_are_refused_naming_the_model_field(engine: Engine) -> None:
    with pytest.raises(WrongKindError) as caught:
        engine.call("gradient", model="densenet-tiny")
    assert caught.value.field == "model"
    with pytest.raises(WrongKindError):
        engine.call("infer", model="made-tiny")
    with pytest.raises(WrongKindError):
        engine.call("sample", model="rnn-tiny")
