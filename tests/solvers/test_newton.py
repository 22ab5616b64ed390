"""Newton (DEER) and diagonal quasi-Newton for chains: the sequential trajectory, in few iterations."""

import pytest
import torch

from solvers.newton import autograd_jacobian, newton_chain


def tanh_chain(hidden: int, seed: int, scale: float = 0.9) -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(hidden, hidden).double()
    with torch.no_grad():
        layer.weight.mul_(scale / torch.linalg.matrix_norm(layer.weight, 2))
    w_x = torch.randn(hidden, dtype=torch.float64)
    return layer, w_x


def sequential(f, x: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    states, s = [], s0
    for t in range(x.shape[1]):
        s = f(x[:, t], s)
        states.append(s)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("diagonal", [False, True])
def test_newton_reaches_the_sequential_trajectory(diagonal: bool) -> None:
    layer, w_x = tanh_chain(8, seed=1)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(layer(s) + x[:, None] * w_x)

    x = torch.rand(3, 200, dtype=torch.float64)
    s0 = torch.zeros(3, 8, dtype=torch.float64)
    with torch.no_grad():
        reference = sequential(f, x, s0)
        result = newton_chain(f, x, s0, tol=1e-12, diagonal=diagonal)
    assert result.converged
    assert float((result.states - reference).abs().max()) < 1e-10
    assert result.residual < 1e-10
    if not diagonal:
        assert result.iterations <= 12  # quadratic convergence: a handful of iterations, not T = 200


def test_autograd_jacobian_matches_the_closed_form() -> None:
    layer, w_x = tanh_chain(5, seed=2)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(layer(s) + x[:, None] * w_x)

    x, s = torch.rand(4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        slope = 1 - f(x, s) ** 2
        torch.testing.assert_close(autograd_jacobian(f)(x, s), slope[:, :, None] * layer.weight)


def test_a_capped_solve_says_it_did_not_converge() -> None:
    layer, w_x = tanh_chain(6, seed=3, scale=0.99)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(layer(s) + 3 * x[:, None] * w_x)

    x = torch.rand(2, 100, dtype=torch.float64)
    with torch.no_grad():
        result = newton_chain(f, x, torch.zeros(2, 6, dtype=torch.float64), max_iterations=1)
    assert result.iterations == 1
    assert not result.converged
    assert result.residual > 0


def test_newton_solves_a_linear_recurrence_in_one_iteration() -> None:
    """f affine in s: the linearization is f itself, so one scan gives the sequential states (to rounding)."""
    torch.manual_seed(4)
    weight = torch.randn(6, 6, dtype=torch.float64)
    weight *= 0.95 / torch.linalg.matrix_norm(weight, 2)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return s @ weight.T + x[:, None]

    x, s0 = torch.randn(2, 300, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    with torch.no_grad():
        reference = sequential(f, x, s0)
        result = newton_chain(f, x, s0, tol=1e-9)
    assert result.iterations == 1
    assert result.converged
    torch.testing.assert_close(result.states, reference, rtol=1e-9, atol=1e-9)


def test_a_diverging_newton_returns_its_best_bounded_iterate() -> None:
    """An expanding tanh chain (|J| up to 3): the states stay in the box and the residual reported is measured."""
    layer, w_x = tanh_chain(6, seed=5, scale=3.0)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(layer(s) + x[:, None] * w_x)

    x, s0 = torch.rand(2, 400, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64)
    with torch.no_grad():
        result = newton_chain(f, x, s0, max_iterations=8, bounds=(-1.0, 1.0))
        previous = torch.cat([s0[:, None], result.states[:, :-1]], dim=1)
        measured = float((result.states - f(x.reshape(-1), previous.reshape(-1, 6)).reshape(2, 400, 6)).abs().max())
    assert float(result.states.abs().max()) <= 1.0
    assert result.residual == measured
    assert not result.exact
