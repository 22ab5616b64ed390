"""MGRIT for chains: finite termination bit for bit, per-row exactness, tolerance mode, the caller's coarse step."""

import math

import pytest
import torch

from solvers.mgrit import ChainStep, MGRITConfig, MGRITResult, mgrit, mgriting, sequential_chain
from solvers.pieces import drain


def tanh_chain(steps: int, rows: int, width: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """u_{n+1} = tanh(a_n u_n + b_n), elementwise (batch invariant: a row's bits never depend on its company)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(steps, rows, width, generator=g, dtype=torch.float64) * 1.8 - 0.9
    b = torch.randn(steps, rows, width, generator=g, dtype=torch.float64)
    return lambda n, u: torch.tanh(a[n] * u + b[n])


def integer_chain(steps: int, rows: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """u_{n+1} = (5 u_n + x_n) mod 1021 in int64: exact arithmetic, nothing to smooth, only finite termination."""
    x = torch.randint(0, 1021, (steps, rows, 1), generator=torch.Generator().manual_seed(seed))
    return lambda n, u: (5 * u + x[n]) % 1021


def run_with_prefix_check(
    step: ChainStep, u0: torch.Tensor, steps: int, cfg: MGRITConfig, reference: torch.Tensor
) -> MGRITResult:
    """Run MGRIT cycle by cycle, asserting that after k cycles the first k coarse intervals are the serial ones."""

    def check(running: MGRITResult) -> None:
        k = running.iterations
        prefix = min(k * cfg.coarsening, steps) + 1
        assert torch.equal(running.states[:prefix], reference[:prefix]), f"cycle {k}: prefix {prefix} not exact"

    return drain(mgriting(step, u0, steps, cfg), check)


@pytest.mark.parametrize("relax", ["F", "FCF"])
@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("m", [2, 4, 7])
def test_finite_termination_on_an_integer_chain(relax: str, levels: int, m: int) -> None:
    steps, rows = 60, 2
    step = integer_chain(steps, rows)
    u0 = torch.tensor([[3], [700]])
    reference = sequential_chain(step, u0, steps)
    cfg = MGRITConfig(coarsening=m, levels=levels, relax=relax)
    result = run_with_prefix_check(step, u0, steps, cfg, reference)
    assert result.exact
    assert result.converged
    assert result.residual == 0.0
    assert torch.equal(result.states, reference)
    assert result.iterations <= math.ceil(steps / m)  # the finite-termination bound


@pytest.mark.parametrize("relax", ["F", "FCF"])
@pytest.mark.parametrize("levels", [2, 4])
def test_floating_point_chain_ends_bit_for_bit(relax: str, levels: int) -> None:
    steps = 150
    step = tanh_chain(steps, rows=3, width=4)
    u0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    reference = sequential_chain(step, u0, steps)
    cfg = MGRITConfig(coarsening=4, levels=levels, relax=relax)
    result = run_with_prefix_check(step, u0, steps, cfg, reference)
    assert result.exact
    assert torch.equal(result.states, reference)
    if relax == "FCF":  # a contracting chain: convergence long before the finite-termination bound
        assert result.iterations < steps // 4 // 3
        assert all(f < 0.5 for f in result.factors[:-1] if f > 0)


def test_per_row_exactness_and_iterations() -> None:
    steps = 80
    x = torch.randint(0, 1021, (steps, 2, 1), generator=torch.Generator().manual_seed(1))
    x[:, 1] = 0  # row 1 is 0 -> 0 -> ...: exact from the first relaxation

    def step(n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (5 * u + x[n]) % 1021

    result = mgrit(step, torch.tensor([[4], [0]]), steps, MGRITConfig(coarsening=4, relax="F"))
    assert result.exact
    assert result.row_iterations[1] == 0
    assert result.row_iterations[0] == result.iterations > 0


def test_tolerance_mode_reports_its_residual() -> None:
    steps = 200
    step = tanh_chain(steps, rows=2, width=3, seed=4)
    u0 = torch.zeros(2, 3, dtype=torch.float64)
    result = mgrit(step, u0, steps, MGRITConfig(coarsening=8, tol=1e-6))
    assert result.converged
    assert 0 < result.residual <= 1e-6
    assert not result.exact
    reference = sequential_chain(step, u0, steps)
    assert float((result.states - reference).abs().max()) < 1e-4


def test_a_capped_solve_says_it_did_not_converge() -> None:
    steps = 64
    step = integer_chain(steps, rows=1)
    result = mgrit(step, torch.tensor([[1]]), steps, MGRITConfig(coarsening=4, relax="F", max_iterations=2))
    assert not result.converged
    assert not result.exact
    assert result.iterations == 2
    assert result.residual > 0


def test_the_callers_coarse_propagator_is_used_and_exactness_holds() -> None:
    steps = 96
    rate = 0.05

    def step(n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # gradient descent on 0.5 (u - n/100)^2
        return u - rate * (u - n.to(u.dtype).view(-1, 1, 1) / 100)

    calls = []

    def coarse(start: torch.Tensor, stop: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        calls.append(int(start.numel()))
        span = (stop - start).to(u.dtype).view(-1, 1, 1)
        return u - span * rate * (u - start.to(u.dtype).view(-1, 1, 1) / 100)  # one step, span times larger

    u0 = torch.ones(1, 1, dtype=torch.float64)
    result = mgrit(step, u0, steps, MGRITConfig(coarsening=8, levels=3), coarse=coarse)
    assert calls
    assert result.exact
    assert torch.equal(result.states, sequential_chain(step, u0, steps))
    assert result.iterations <= 8  # well inside the finite-termination bound of 13


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"coarsening": 1}, "coarsening"), ({"levels": 1}, "levels"), ({"relax": "C"}, "relax")],
)
def test_bad_configurations_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MGRITConfig(**kwargs)  # type: ignore[arg-type]


def test_a_guess_of_the_wrong_shape_is_refused() -> None:
    step = integer_chain(10, rows=1)
    with pytest.raises(ValueError, match="guess"):
        mgrit(step, torch.tensor([[1]]), 10, guess=torch.zeros(5, 1, 1, dtype=torch.long))
