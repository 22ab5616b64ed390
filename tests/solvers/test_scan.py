"""The parallel scan solves linear recurrences like the sequential loop, in ceil(log2 T) levels."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from solvers.scan import linear_scan, linear_sequential


def problem(batch: int, length: int, hidden: int, diagonal: bool, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, length, hidden) if diagonal else (batch, length, hidden, hidden)
    scale = 1.0 if diagonal else 1.0 / hidden**0.5
    a = (torch.randn(shape, generator=g, dtype=torch.float64) * scale * 0.9).to(dtype)
    b = torch.randn(batch, length, hidden, generator=g, dtype=torch.float64).to(dtype)
    h0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64).to(dtype)
    return a, b, h0


@given(
    st.integers(1, 3),
    st.integers(1, 70),
    st.integers(1, 6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_scan_equals_the_loop_in_float64(batch, length, hidden, diagonal, reverse, with_h0, seed) -> None:
    a, b, h0 = problem(batch, length, hidden, diagonal, torch.float64, seed)
    start = h0 if with_h0 else None
    result = linear_scan(a, b, start, reverse=reverse)
    expected = linear_sequential(a, b, start, reverse=reverse)
    torch.testing.assert_close(result.h, expected, rtol=1e-10, atol=1e-10)
    assert result.levels == (math.ceil(math.log2(length)) if length > 1 else 0)


@pytest.mark.parametrize("diagonal", [False, True])
def test_float32_agrees_to_rounding(diagonal: bool) -> None:
    a, b, h0 = problem(4, 784, 32, diagonal, torch.float32, 1)
    result = linear_scan(a, b, h0, reverse=True)
    reference = linear_sequential(a.double(), b.double(), h0.double(), reverse=True)
    torch.testing.assert_close(result.h.double(), reference, rtol=1e-4, atol=1e-5)
    assert result.levels == 10


def test_known_closed_form() -> None:
    """h_t = 2 h_{t-1} + 1 from h_0 = 0 is 2^t - 1."""
    a = torch.full((1, 20, 1), 2.0, dtype=torch.float64)
    b = torch.ones(1, 20, 1, dtype=torch.float64)
    h = linear_scan(a, b).h[0, :, 0]
    assert torch.equal(h, 2.0 ** torch.arange(1, 21, dtype=torch.float64) - 1)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="A must have shape"):
        linear_scan(torch.zeros(1, 5, 3, 2), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="h0"):
        linear_scan(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), torch.zeros(3))
