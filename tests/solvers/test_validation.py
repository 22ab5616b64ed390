"""Bad arguments fail fast with a message that names the argument; degenerate sizes work."""

import pytest
import torch

from solvers import solve


def identity_chain(x: torch.Tensor) -> torch.Tensor:
    y = torch.ones_like(x)
    y[:, 1:] = x[:, :-1] + 1
    return y


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "newton"}, "method must be one of"),
        ({"block_size": 0}, "block_size"),
        ({"tol": -1.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"max_iterations": 0}, "max_iterations"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        solve(identity_chain, torch.zeros(2, 5), **kwargs)


def test_x0_needs_a_batch_and_a_sequence_axis() -> None:
    with pytest.raises(ValueError, match="x0 must have shape"):
        solve(identity_chain, torch.zeros(5))


def test_step_with_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match="step returned"):
        solve(lambda x: x[:, :-1], torch.zeros(2, 5))


def test_step_with_wrong_dtype_is_named() -> None:
    with pytest.raises(TypeError, match="dtype"):
        solve(lambda x: x.double(), torch.zeros(2, 5))


def test_empty_sequence_and_empty_batch() -> None:
    result = solve(identity_chain, torch.zeros(3, 0))
    assert result.evaluations == 0
    assert result.converged.all()
    result = solve(identity_chain, torch.zeros(0, 5))
    assert result.evaluations == 0
    assert result.x.shape == (0, 5)


def test_single_unknown_takes_one_evaluation() -> None:
    result = solve(identity_chain, torch.zeros(2, 1))
    assert result.iterations.tolist() == [1, 1]
    assert result.x.tolist() == [[1.0], [1.0]]
