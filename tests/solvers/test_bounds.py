"""Iteration counts: the worst case needs the bound, easy systems stop early, caps and tolerances are honest."""

import pytest
import torch

from solvers import METHODS, solve
from tests.solvers.systems import make_system


@pytest.mark.parametrize("method", METHODS)
def test_pure_chain_needs_the_full_bound(method: str) -> None:
    """s_t = s_{t-1} + 1 from zeros: each evaluation certifies exactly one more unknown."""
    system = make_system("chain", batch=2, length=50)
    result = solve(system.step(with_rows=False), system.x0(), method=method)
    assert result.iterations.tolist() == [50, 50]
    assert torch.equal(result.x, system.reference())


def test_star_system_converges_in_a_few_evaluations() -> None:
    """Everything depends only on s_0: evaluation 1 fixes s_0, 2 fixes the rest, 3 confirms."""
    system = make_system("star", batch=5, length=200, shape=(3,))
    result = solve(system.step(with_rows=True), system.x0(), method="jacobi")
    assert result.iterations.tolist() == [3] * 5
    assert result.evaluations == 3
    assert torch.equal(result.x, system.reference())


@pytest.mark.parametrize("method", ["jacobi", "jacobi_gs", "gs_jacobi"])
def test_hybrids_stop_early_on_easy_systems(method: str) -> None:
    system = make_system("star", batch=2, length=100)
    result = solve(system.step(with_rows=True), system.x0(), method=method, block_size=10)
    assert (result.iterations < 100).all()
    assert torch.equal(result.x, system.reference())


@pytest.mark.parametrize("method", METHODS)
def test_truncation_is_reported_and_the_certified_prefix_is_exact(method: str) -> None:
    system = make_system("chain", batch=3, length=40)
    result = solve(system.step(with_rows=True), system.x0(), method=method, max_iterations=7)
    truth = system.reference()
    assert not result.converged.any()
    assert result.iterations.tolist() == [7, 7, 7]
    assert result.final.tolist() == [7, 7, 7]
    assert torch.equal(result.x[:, :7], truth[:, :7])


def test_cap_above_the_bound_changes_nothing() -> None:
    system = make_system("tanh", batch=3, length=25, seed=1)
    capped = solve(system.step(with_rows=True), system.x0(), max_iterations=1000)
    plain = solve(system.step(with_rows=True), system.x0())
    assert torch.equal(capped.x, plain.x)
    assert torch.equal(capped.iterations, plain.iterations)


def test_per_row_stopping_reports_each_rows_own_count() -> None:
    """Rows of different difficulty: a solved row stops at 1, a chain-like row needs more."""
    system = make_system("tanh", batch=4, length=30, seed=5)
    x0 = system.x0()
    truth = system.reference()
    x0[0] = truth[0]  # row 0 starts at its solution
    result = solve(system.step(with_rows=True), x0)
    assert result.iterations[0] == 1
    assert (result.iterations[1:] > 1).all()
    assert result.evaluations == int(result.iterations.max())
    assert torch.equal(result.x, truth)


def test_tolerance_trades_exactness_for_iterations() -> None:
    system = make_system("tanh", batch=6, length=60, shape=(2,), seed=11)
    truth = system.reference()
    previous = None
    for tol in [0.0, 1e-6, 1e-3, 1e-1]:
        result = solve(system.step(with_rows=True), system.x0(), tol=tol)
        assert result.converged.all()
        error = (result.x - truth).abs().max().item()
        if tol == 0.0:
            assert error == 0.0
        else:
            assert error <= 60 * tol  # at most tol per certified position, propagated through a contraction
        if previous is not None:
            assert (result.iterations <= previous).all()
        previous = result.iterations


def test_huge_tolerance_accepts_the_first_jacobi_step() -> None:
    system = make_system("tanh", batch=2, length=20, seed=2)
    step = system.step(with_rows=False)
    result = solve(step, system.x0(), tol=1e9)
    assert result.iterations.tolist() == [1, 1]
    assert torch.equal(result.x, step(system.x0()))


def test_tolerance_on_a_discrete_system_behaves_like_exact_below_one_level() -> None:
    system = make_system("quantized", batch=3, length=30, seed=4)
    exact = solve(system.step(with_rows=True), system.x0())
    loose = solve(system.step(with_rows=True), system.x0(), tol=0.5)
    assert torch.equal(exact.x, loose.x)
    assert torch.equal(exact.iterations, loose.iterations)
