"""The recurrent regressors: closed-form step Jacobians equal autograd; the fused GRU equals the explicit cell."""

import pytest
import torch

from models.rnn import RecurrentRegressor, RNNConfig


@pytest.mark.parametrize("cell", ["softplus", "gru"])
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
