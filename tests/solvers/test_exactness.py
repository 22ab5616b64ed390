"""Every method returns exactly the sequential solution, within its bound (docs/ARCHITECTURE.md, "Contracts")."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from solvers import METHODS, solve, solve_backward
from tests.solvers.systems import KINDS, make_system


@st.composite
def problems(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(KINDS))
    length = draw(st.integers(1, 40))
    return {
        "kind": kind,
        "batch": draw(st.integers(1, 6)),
        "length": length,
        "shape": draw(st.sampled_from([(), (1,), (3,), (2, 2)])),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "method": draw(st.sampled_from(METHODS)),
        "block_size": draw(st.one_of(st.none(), st.integers(1, length + 3))),
        "with_rows": draw(st.booleans()),
    }


@given(problems())
def test_every_method_equals_the_sequential_loop_bit_for_bit(p: dict) -> None:
    system = make_system(p["kind"], p["batch"], p["length"], p["shape"], p["seed"])
    result = solve(system.step(p["with_rows"]), system.x0(), method=p["method"], block_size=p["block_size"])
    assert torch.equal(result.x, system.reference())
    assert result.converged.all()
    assert (result.iterations >= 1).all()
    assert (result.iterations <= p["length"]).all()
    assert (result.final == p["length"]).all()
    assert result.evaluations == int(result.iterations.max())
    if p["method"] == "sequential":
        assert (result.iterations == p["length"]).all()


@given(st.integers(0, 2**31 - 1), st.sampled_from(METHODS), st.sampled_from(["tanh", "bernoulli", "linear"]))
def test_masked_matmul_maps_are_exact_too(seed: int, method: str, kind: str) -> None:
    """A real GEMM with exact-zero masked weights: the fixed point of the computed map is the sequential one."""
    system = make_system(kind, batch=8, length=48, shape=(2,), seed=seed, matmul=True)
    result = solve(system.step(with_rows=False), system.x0(), method=method)
    assert torch.equal(result.x, system.reference())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32])
def test_any_dtype(method: str, dtype: torch.dtype) -> None:
    system = make_system("chain", batch=3, length=17, shape=(2,))
    x0 = torch.zeros(3, 17, 2, dtype=dtype)
    result = solve(system.step(with_rows=True), x0, method=method)
    expected = torch.arange(1, 18, dtype=dtype)[None, :, None].expand(3, 17, 2)
    assert result.x.dtype == dtype
    assert torch.equal(result.x, expected)


def test_initial_guess_that_is_already_the_solution_costs_one_evaluation() -> None:
    system = make_system("tanh", batch=4, length=30, seed=3)
    truth = system.reference()
    result = solve(system.step(with_rows=True), truth, method="jacobi")
    assert result.iterations.tolist() == [1, 1, 1, 1]
    assert torch.equal(result.x, truth)


def test_x0_is_not_modified() -> None:
    system = make_system("tanh", batch=2, length=10)
    x0 = system.x0()
    solve(system.step(with_rows=False), x0)
    assert torch.equal(x0, torch.zeros_like(x0))


def test_nan_in_the_solution_still_converges() -> None:
    def step(x: torch.Tensor) -> torch.Tensor:
        y = torch.ones_like(x)
        y[:, 1:] = x[:, :-1] * 2
        y[:, 3] = float("nan")
        return y

    reference = torch.tensor([[1, 2, 4, float("nan"), float("nan"), float("nan")]])
    for method in METHODS:
        result = solve(step, torch.zeros(1, 6), method=method)
        assert result.converged.all()
        torch.testing.assert_close(result.x, reference, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["tanh", "quantized", "chain"])
def test_solve_backward_solves_upper_triangular_systems(method: str, kind: str) -> None:
    """x_t = f_t(x_{t+1:}): the lower system read backwards in time, solved in the original order."""
    system = make_system(kind, batch=3, length=17, shape=(2,), seed=5)
    lower = system.step(False)

    def upper(x: torch.Tensor) -> torch.Tensor:  # y[:, t] depends only on x[:, t+1:]
        return lower(x.flip(1)).flip(1)

    result = solve_backward(upper, system.x0(), method=method, block_size=4)
    assert torch.equal(result.x, system.reference().flip(1))
    assert result.converged.all()
    assert (result.iterations <= 17).all()
