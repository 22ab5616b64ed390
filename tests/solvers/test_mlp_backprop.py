"""Backprop of a deep MLP as a linear system: scan and Jacobi equal autograd."""

import pytest
import torch

from tests.solvers.mlp_backprop import TanhMLP, mlp_gradients


def mlp(depth: int, width: int = 16, inputs: int = 10, classes: int = 5) -> TanhMLP:
    g = torch.Generator().manual_seed(depth)
    sizes = [inputs] + [width] * depth

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) / shape[-1] ** 0.5 * 1.5

    weights = [rand(sizes[i + 1], sizes[i]) for i in range(depth)]
    biases = [rand(width) for _ in range(depth)]
    return TanhMLP(weights, biases, rand(classes, width), rand(classes))


@pytest.mark.parametrize("depth", [1, 2, 7, 32])
@pytest.mark.parametrize("method", ["scan", "jacobi"])
def test_linear_solvers_reproduce_autograd(depth: int, method: str) -> None:
    net = mlp(depth)
    x = torch.randn(6, 10, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    reference = mlp_gradients(net, x, labels, "sequential")
    for got, want in zip(mlp_gradients(net, x, labels, method), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        mlp_gradients(mlp(2), torch.zeros(1, 10, dtype=torch.float64), torch.tensor([0]), "newton")
