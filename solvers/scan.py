"""Linear recurrences h_t = A_t h_{t-1} + b_t solved by a parallel prefix over affine maps.

A linear first-order recurrence is a block-bidiagonal lower-triangular system. Jacobi needs all T iterations on it
(its iteration matrix is nilpotent of index T), but the maps M_t(h) = A_t h + b_t compose associatively,
    (A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2),
so every prefix P_t = M_t o ... o M_1 follows from a parallel scan, and h_t = P_t(h_0). The scan here is
Sklansky's: level k combines, inside each block of 2^(k+1) steps, the upper half with the last prefix of the
lower half; after ceil(log2 T) levels every prefix is complete. Depth: ceil(log2 T) batched combines. Work:
(T/2) ceil(log2 T) combines, each an H x H matrix product for dense A (O(H^3)) or an elementwise product for
diagonal A (O(H)); the sequential loop does T matrix-vector products (O(H^2)). So the scan trades work for depth:
it wins where depth is what costs (a GPU, long T), and loses where arithmetic is (a CPU, large H).

Exactness: the same sums as the sequential loop, reassociated; agreement is to floating-point rounding (float64:
~1e-12 relative), not bit for bit. Naumov, "Parallel Complexity of Forward and Backward Propagation" (arXiv
1712.06577); Blelloch, "Prefix sums and their applications" (1990).

Shapes: A (B, T, H, H) dense or (B, T, H) diagonal; b (B, T, H); h0 (B, H) or None (zeros); h (B, T, H).
``reverse=True`` solves g_t = A_t g_{t+1} + b_t from t = T down (the direction of backpropagation).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import torch

from solvers.pieces import drain


@dataclass(frozen=True)
class ScanResult:
    h: torch.Tensor  # (B, T, H): h_1..h_T (or g_1..g_T for reverse)
    levels: int  # combine levels on the critical path: ceil(log2 T)


def _combine(
    a_hi: torch.Tensor, b_hi: torch.Tensor, a_lo: torch.Tensor, b_lo: torch.Tensor, diagonal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_hi, b_hi) o (a_lo, b_lo): apply the lower map first."""
    if diagonal:
        return a_hi * a_lo, a_hi * b_lo + b_hi
    return a_hi @ a_lo, (a_hi @ b_lo.unsqueeze(-1)).squeeze(-1) + b_hi


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False) -> ScanResult:
    """All states of h_t = A_t h_{t-1} + b_t (or, reversed, g_t = A_t g_{t+1} + b_t) in ceil(log2 T) levels."""
    return drain(scanning(a, b, h0, reverse))


def scanning(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False, overwrite: bool = False
) -> Generator[int, None, ScanResult]:
    """``linear_scan`` one level at a time: yields the number of levels done, returns the result.

    overwrite: the caller hands over ``a`` and ``b`` (they may be overwritten): saves a copy of the Jacobians.
    """
    diagonal = a.dim() == b.dim()
    _check(a, b, h0, diagonal)
    batch, length, hidden = b.shape
    if reverse:
        a, b = a.flip(1), b.flip(1)  # copies
    levels = math.ceil(math.log2(length)) if length > 1 else 0
    size = 1 << levels
    if size > length:  # pad with identity maps at the end: they never feed a real position
        pad = size - length
        eye = (
            torch.ones(hidden, dtype=a.dtype, device=a.device)
            if diagonal
            else torch.eye(hidden, dtype=a.dtype, device=a.device)
        )
        a = torch.cat([a, eye.expand(batch, pad, *eye.shape)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, pad, hidden)], dim=1)
    elif not (reverse or overwrite):
        a, b = a.clone(), b.clone()
    for level in range(levels):
        half = 1 << level
        blocks = size // (2 * half)
        a_view = a.view(batch, blocks, 2, half, *a.shape[2:])
        b_view = b.view(batch, blocks, 2, half, hidden)
        a_lo, b_lo = a_view[:, :, 0, -1:], b_view[:, :, 0, -1:]  # the lower half's complete prefix
        new_a, new_b = _combine(a_view[:, :, 1], b_view[:, :, 1], a_lo, b_lo, diagonal)
        a_view[:, :, 1] = new_a
        b_view[:, :, 1] = new_b
        del new_a, new_b
        yield level + 1
    a, b = a[:, :length], b[:, :length]
    h = b
    if h0 is not None:
        h = h + (a * h0[:, None] if diagonal else (a @ h0[:, None, :, None]).squeeze(-1))
    return ScanResult(h.flip(1) if reverse else h, levels)


def linear_sequential(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """The same recurrence by the plain loop (T dependent steps): the reference."""
    diagonal = a.dim() == b.dim()
    _check(a, b, h0, diagonal)
    batch, length, hidden = b.shape
    h = h0 if h0 is not None else b.new_zeros(batch, hidden)
    out = []
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        h = (a[:, t] * h if diagonal else (a[:, t] @ h[..., None])[..., 0]) + b[:, t]
        out.append(h)
    if reverse:
        out.reverse()
    return torch.stack(out, dim=1) if out else b.new_zeros(batch, 0, hidden)


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, diagonal: bool) -> None:
    if b.dim() != 3:
        raise ValueError(f"b must have shape (B, T, H); got {tuple(b.shape)}")
    expected = tuple(b.shape) if diagonal else (*b.shape, b.shape[-1])
    if tuple(a.shape) != expected:
        raise ValueError(f"A must have shape {expected} (dense) or {tuple(b.shape)} (diagonal); got {tuple(a.shape)}")
    if h0 is not None and tuple(h0.shape) != (b.shape[0], b.shape[2]):
        raise ValueError(f"h0 must have shape {(b.shape[0], b.shape[2])}; got {tuple(h0.shape)}")
