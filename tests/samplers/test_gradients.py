"""RNN gradients by Jacobi and by parallel scan equal autograd BPTT; truncated Jacobi is truncated BPTT."""

import math

import pytest
import torch

from models.rnn import RecurrentRegressor, RNNConfig
from samplers.bptt import BackwardSystem, autograd_gradient, max_abs_diff, rnn_gradient

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def model_and_batch(cell: str, size: int, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    model = RecurrentRegressor(RNNConfig(cell=cell, hidden_size=12, image_size=size)).to(dtype).eval()
    return model, torch.rand(3, size * size, dtype=dtype)


@pytest.mark.parametrize("cell", ["softplus", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("wrt", ["params", "inputs"])
@pytest.mark.parametrize("method", ["jacobi", "scan"])
def test_solvers_match_autograd(cell: str, dtype: torch.dtype, wrt: str, method: str) -> None:
    model, x = model_and_batch(cell, 7, dtype)
    loss, reference = autograd_gradient(model, x, wrt)
    result = rnn_gradient(model, x, method, wrt)
    assert result.exact
    assert set(result.gradients) == set(reference)
    assert max_abs_diff(result.gradients, reference) <= TOLERANCE[dtype]
    assert result.loss == pytest.approx(loss, rel=1e-6)
    if method == "scan":
        assert result.iterations == math.ceil(math.log2(49))
    else:
        assert result.iterations <= 49


def truncated_bptt(system: BackwardSystem, n: int) -> torch.Tensor:
    """g_t = sum_{k<n} J_t^T ... J_{t+k-1}^T c_{t+k}, by an explicit loop over windows (independent of solvers)."""
    a, c = system.jacobians(), system.c
    batch, length, hidden = c.shape
    g = torch.zeros_like(c)
    for t in range(length):
        product = torch.eye(hidden, dtype=c.dtype).expand(batch, hidden, hidden)
        for k in range(n):
            if t + k >= length:
                break
            g[:, t] += (product @ c[:, t + k, :, None])[..., 0]
            product = product @ a[:, t + k]
    return g


@pytest.mark.parametrize("cell", ["softplus", "gru"])
@pytest.mark.parametrize("n", [1, 3, 10])
def test_truncated_jacobi_is_truncated_bptt(cell: str, n: int) -> None:
    model, x = model_and_batch(cell, 6, torch.float64, seed=1)
    system = BackwardSystem(model, x)
    expected = system.gradients(truncated_bptt(system, n), "params")
    result = rnn_gradient(model, x, "jacobi", max_iterations=n)
    assert not result.exact
    assert result.iterations == n
    assert result.residual > 0
    assert max_abs_diff(result.gradients, expected) <= 1e-12


def test_bad_arguments_are_named() -> None:
    model, x = model_and_batch("softplus", 3, torch.float64)
    with pytest.raises(ValueError, match="wrt"):
        rnn_gradient(model, x, "scan", wrt="weights")
    with pytest.raises(ValueError, match="method"):
        rnn_gradient(model, x, "newton")


@pytest.mark.parametrize("cell", ["softplus", "gru"])
@pytest.mark.parametrize("wrt", ["params", "inputs"])
@pytest.mark.parametrize("segment", [None, 1, 7, 16])
def test_bptt_in_time_segments_is_plain_autograd(cell: str, wrt: str, segment: int | None) -> None:
    """The server's BPTT (backward a segment at a time, each recomputed from its first state) against torch's
    autograd through the model's own forward, with and without explicit targets."""
    from samplers.bptt import autograd_pieces
    from solvers import drain

    model, x = model_and_batch(cell, 6, torch.float64, seed=2)  # T = 36
    for targets in (None, torch.rand_like(x)):
        inputs = x.clone().requires_grad_(wrt == "inputs")
        wanted = inputs if targets is None else targets
        loss = ((model(inputs) - wanted) ** 2).mean()
        leaves = [inputs] if wrt == "inputs" else list(model.parameters())
        names = ["inputs"] if wrt == "inputs" else [n for n, _ in model.named_parameters()]
        expected = dict(zip(names, torch.autograd.grad(loss, leaves), strict=True))
        with torch.no_grad():
            total, got = drain(autograd_pieces(model, x, wrt, targets, segment))
        assert total == pytest.approx(float(loss.detach()), rel=1e-12)
        assert max_abs_diff(got, expected) <= 1e-12
