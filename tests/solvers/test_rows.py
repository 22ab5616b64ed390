"""Rows are independent, converged rows are not recomputed, and the solver only reads what it says it reads."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from solvers import METHODS, FixedPointBatch, solve
from tests.solvers.systems import make_system


@given(st.integers(0, 2**31 - 1), st.sampled_from(METHODS), st.sampled_from(["tanh", "bernoulli", "quantized"]))
def test_row_results_do_not_depend_on_the_rest_of_the_batch(seed: int, method: str, kind: str) -> None:
    system = make_system(kind, batch=6, length=32, shape=(2,), seed=seed)
    together = solve(system.step(with_rows=True), system.x0(), method=method, block_size=5)
    for i in range(6):
        alone = make_system(kind, batch=6, length=32, shape=(2,), seed=seed)
        alone.noise = alone.noise[i : i + 1]
        alone.batch = 1
        single = solve(alone.step(with_rows=True), alone.x0(), method=method, block_size=5)
        assert torch.equal(single.x[0], together.x[i])
        assert single.iterations[0] == together.iterations[i]


@pytest.mark.parametrize("method", ["jacobi", "jacobi_gs", "gs_jacobi"])
def test_converged_rows_are_not_recomputed(method: str) -> None:
    system = make_system("bernoulli", batch=8, length=60, seed=7)
    seen: list[torch.Tensor] = []

    def step(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.clone())
        return system.evaluate(x, rows)

    result = solve(step, system.x0(), method=method)
    assert len(seen) == result.evaluations
    for k, rows in enumerate(seen):
        expected = torch.nonzero(result.iterations > k).flatten()  # rows still iterating at evaluation k
        assert torch.equal(rows, expected)
    assert sum(len(r) for r in seen) == int(result.iterations.sum())


def test_converged_rows_stop_changing() -> None:
    system = make_system("tanh", batch=5, length=40, seed=9)
    snapshots: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(batch: FixedPointBatch) -> None:
        snapshots.append((batch.x.clone(), batch.converged.clone()))

    result = solve(system.step(with_rows=False), system.x0(), callback=record)
    for x, converged in snapshots:
        assert torch.equal(x[converged], result.x[converged])


@pytest.mark.parametrize("method", METHODS)
def test_only_the_announced_span_is_read(method: str) -> None:
    """A step that writes NaN outside [lo, hi) must not change the answer: the solver reads only the span."""
    system = make_system("tanh", batch=4, length=45, shape=(2,), seed=13)
    widths: list[int] = []

    def step(x: torch.Tensor, rows: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        y = system.evaluate(x, rows)
        t = torch.arange(x.shape[1])
        outside = (t[None] < span[:, :1]) | (t[None] >= span[:, 1:])
        widths.append(int((span[:, 1] - span[:, 0]).max()))
        return torch.where(outside[..., None], torch.full_like(y, float("nan")), y)

    result = solve(step, system.x0(), method=method, block_size=6)
    assert torch.equal(result.x, system.reference())
    if method == "sequential":
        assert set(widths) == {1}
    if method == "gs_jacobi":
        assert max(widths) <= 6


def test_batch_state_supports_adding_and_dropping_rows_between_evaluations() -> None:
    """The worker's use: rows join mid-flight and leave when done, with the same answers as solve()."""
    system = make_system("bernoulli", batch=6, length=30, seed=21)
    truth = system.reference()
    from solvers import Schedule

    batch = FixedPointBatch.start(system.x0()[:3], Schedule())
    ids = torch.arange(3)  # original row id of each batch row
    answers: dict[int, torch.Tensor] = {}
    waiting = [3, 4, 5]
    while batch.rows:
        rows = batch.pending()
        batch.advance(rows, system.evaluate(batch.x[rows], ids[rows]))
        finished = torch.nonzero(batch.done).flatten()
        for i in finished.tolist():
            answers[int(ids[i])] = batch.x[i].clone()
        keep = torch.nonzero(~batch.done).flatten()
        batch.keep(keep)
        ids = ids[keep]
        if waiting:
            new = waiting.pop(0)
            batch.add(system.x0()[new : new + 1], Schedule())
            ids = torch.cat([ids, torch.tensor([new])])
    assert sorted(answers) == list(range(6))
    for i in range(6):
        assert torch.equal(answers[i], truth[i])


def test_solving_in_pieces_is_solve_and_can_stop_between_pieces() -> None:
    from solvers import drain, solving

    system = make_system("tanh", batch=10, length=12, seed=3)
    step = system.step(with_rows=True)
    whole = solve(step, system.x0(), method="jacobi")
    pieces = solving(step, system.x0(), method="jacobi", rows_per_call=3)
    states: list[int] = []
    result = drain(pieces, lambda batch: states.append(int(batch.final.sum())))
    assert torch.equal(result.x, whole.x)
    assert torch.equal(result.x, system.reference())
    assert torch.equal(result.iterations, whole.iterations)
    assert result.evaluations == whole.evaluations
    assert len(states) > whole.evaluations  # several calls of 3 rows per evaluation
    stopped = solving(step, system.x0(), method="jacobi", rows_per_call=3)
    next(stopped)
    stopped.close()  # a server dropping a job between pieces
