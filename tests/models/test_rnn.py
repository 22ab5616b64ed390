"""The recurrent regressors: closed-form step Jacobians equal autograd; the fused GRU equals the explicit cell."""

import pytest
import torch

from models.rnn import RecurrentRegressor, RNNConfig


@pytest.mark.parametrize("cell", ["softplus", "gru", "orthogonal"])
def test_step_jacobian_matches_autograd(cell: str) -> None:
    torch.manual_seed(0)
    model = RecurrentRegressor(RNNConfig(cell=cell, hidden_size=12, image_size=3)).double()
    x_t = torch.rand(4, dtype=torch.float64)
    h = torch.randn(4, 12, dtype=torch.float64)
    closed = model.step_jacobian(x_t, h)
    for i in range(4):
        auto = torch.autograd.functional.jacobian(lambda hh, i=i: model.cell(x_t[i : i + 1], hh[None])[0], h[i])
        torch.testing.assert_close(closed[i], auto, rtol=0, atol=1e-12)


def test_fused_gru_training_path_equals_the_explicit_cell() -> None:
    torch.manual_seed(1)
    model = RecurrentRegressor(RNNConfig(cell="gru", hidden_size=16, image_size=4)).double()
    x = torch.rand(3, 16, dtype=torch.float64)
    fused = model.train()(x)
    explicit = model.eval()(x)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["softplus", "orthogonal"])
def test_training_path_equals_the_explicit_cell(cell: str) -> None:
    torch.manual_seed(1)
    model = RecurrentRegressor(RNNConfig(cell=cell, hidden_size=16, image_size=4)).double()
    x = torch.rand(3, 16, dtype=torch.float64)
    torch.testing.assert_close(model.train()(x), model.eval()(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["sequential", "jacobi", "scan"])
def test_orthogonal_gradients_reach_the_angles_through_the_round_robin_backward(method: str) -> None:
    from samplers.bptt import rnn_gradient

    torch.manual_seed(3)
    model = RecurrentRegressor(RNNConfig(cell="orthogonal", hidden_size=10, image_size=4)).double()
    x = torch.rand(3, 16, dtype=torch.float64)
    model.train()
    reference = torch.autograd.grad(model.loss(x).mean(), list(model.parameters()))
    model.eval()
    found = rnn_gradient(model, x, method).gradients
    for (name, _), expected in zip(model.named_parameters(), reference, strict=True):
        assert float((found[name] - expected).abs().max()) < 1e-12, name


def test_the_orthogonal_cell_keeps_its_recurrent_weight_orthogonal_through_training() -> None:
    torch.manual_seed(4)
    model = RecurrentRegressor(RNNConfig(cell="orthogonal", hidden_size=8, image_size=3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        model.loss(torch.rand(4, 9)).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        u = model.recurrent_weight()  # rebuilt after the update: the cache follows the angles' version
        torch.testing.assert_close(u, model.recurrent.matrix())
        torch.testing.assert_close(u.T @ u, torch.eye(8), rtol=0, atol=1e-5)


def test_prediction_t_depends_only_on_pixels_before_t() -> None:
    torch.manual_seed(2)
    model = RecurrentRegressor(RNNConfig(hidden_size=8, image_size=3))
    x = torch.rand(1, 9, requires_grad=True)
    out = model(x)
    for t in range(9):
        (grad,) = torch.autograd.grad(out[0, t], x, retain_graph=True)
        assert not grad[0, t:].any()


def test_unknown_cell_is_rejected() -> None:
    with pytest.raises(ValueError, match="cell"):
        RecurrentRegressor(RNNConfig(cell="lstm"))
