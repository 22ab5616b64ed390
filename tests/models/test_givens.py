"""Givens rotations in round-robin rounds: the schedule, the matrix against its sequential definition, the
round-robin backward against autograd, and every special orthogonal matrix reachable."""

import pytest
import torch

from models.givens import Givens, fit_angles, givens_matrix, round_robin

FLOAT32_TOL = 2e-5  # |round-robin U - sequential U| in float32 at n = 64 (measured ~1e-6): rounding of cos/sin sums


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 33, 64])
def test_every_pair_once_and_rounds_disjoint(n: int) -> None:
    schedule = round_robin(n)
    assert sorted(schedule.pairs) == [(a, b) for a in range(n) for b in range(a + 1, n)]
    assert len(schedule.rounds) == (n - 1 if n % 2 == 0 else n)
    for i, j in schedule.rounds:
        members = torch.cat([i, j]).tolist()
        assert len(set(members)) == len(members)  # disjoint: the round's rotations commute
        assert (i < j).all()


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16])
def test_the_rounds_equal_the_sequential_product_bit_for_bit(n: int) -> None:
    torch.manual_seed(n)
    layer = Givens(n, init_scale=1.0).double()
    with torch.no_grad():
        u = layer.matrix()
        assert torch.equal(u, layer.sequential_matrix())
        assert float((u.T @ u - torch.eye(n, dtype=u.dtype)).abs().max()) < 1e-13
        assert float(torch.det(u)) == pytest.approx(1.0, abs=1e-12)


def test_float32_matches_the_float64_definition_to_the_stated_tolerance() -> None:
    torch.manual_seed(0)
    layer = Givens(64, init_scale=1.0)
    with torch.no_grad():
        reference = layer.double().sequential_matrix()
        u = layer.float().matrix()
    assert float((u.double() - reference).abs().max()) < FLOAT32_TOL


@pytest.mark.parametrize("n", [2, 5, 8])
def test_apply_is_u_x_without_forming_u(n: int) -> None:
    torch.manual_seed(1)
    layer = Givens(n, init_scale=1.0).double()
    x = torch.randn(4, 3, n, dtype=torch.float64)
    with torch.no_grad():
        u = layer.matrix()
        torch.testing.assert_close(layer.rotate(x), x @ u.T, rtol=0, atol=1e-13)
        torch.testing.assert_close(layer.rotate(x, transpose=True), x @ u, rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [2, 3, 6, 9, 16])
def test_round_robin_backward_equals_autograd_on_the_sequential_product(n: int) -> None:
    torch.manual_seed(2)
    layer = Givens(n, init_scale=1.0).double()
    weight = torch.randn(n, n, dtype=torch.float64)
    fast = torch.autograd.grad((layer.matrix() * weight).sum(), layer.angles)[0]
    naive = torch.autograd.grad((layer.sequential_matrix() * weight).sum(), layer.angles)[0]
    assert float((fast - naive).abs().max()) < 1e-10


def test_gradcheck_of_the_custom_backward() -> None:
    schedule = round_robin(5)
    angles = torch.randn(10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: givens_matrix(a, schedule), (angles,))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_every_special_orthogonal_matrix_is_reachable(n: int) -> None:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)))
    if torch.det(q) < 0:
        q[0] = -q[0]
    angles = fit_angles(q, round_robin(n))
    assert float((givens_matrix(angles, round_robin(n)) - q).abs().max()) < 1e-10


def test_a_reflection_is_refused() -> None:
    reflection = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="det"):
        fit_angles(reflection, round_robin(3), restarts=2)
