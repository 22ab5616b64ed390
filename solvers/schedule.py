"""Which unknowns each method reads from a step evaluation, and which it writes.

All four methods share one loop (``solvers.batch``): evaluate y = step(x), certify the consistent prefix
(``solvers.convergence``), write some positions of y into x. They differ only in *which* positions they write:

- ``sequential`` (Gauss-Seidel in order, the ordinary feedforward computation): evaluation k writes position k.
  Exactly T evaluations; position t is accepted at evaluation t. No early stop: it is the baseline.
- ``jacobi``: every not-yet-final position, every evaluation.
- ``jacobi_gs`` (Jacobi across blocks of ``block_size`` positions, Gauss-Seidel inside a block): evaluation k
  writes position ``k mod block_size`` of every block, so blocks advance in parallel and each block is swept in
  order, always from the freshest values.
- ``gs_jacobi`` (Gauss-Seidel across blocks, Jacobi inside one): a window of ``block_size`` positions starting at
  the final prefix is iterated by Jacobi; the window slides forward, per row, as its leading positions become
  final. Positions beyond the window keep their initial guess until the window reaches them.

Every method also writes the positions the evaluation certified final. Since the first non-final position is
always written (it is certified by the same evaluation), the final prefix grows by at least one per evaluation:
**every method is exact after at most T evaluations**, the confirming one included.

Reference: Song et al., ICML 2021 (arXiv 2002.03629), Algorithms 1-3.
"""

from __future__ import annotations

import math
from enum import IntEnum

import torch

METHODS: tuple[str, ...] = ("sequential", "jacobi", "jacobi_gs", "gs_jacobi")


class Method(IntEnum):
    """Integer codes so that one batch may hold rows solved by different methods."""

    SEQUENTIAL = 0
    JACOBI = 1
    JACOBI_GS = 2
    GS_JACOBI = 3

    @classmethod
    def parse(cls, name: str) -> Method:
        if name not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
        return cls(METHODS.index(name))


def default_block_size(length: int) -> int:
    """ceil(sqrt(T)): balances the number of blocks against the work inside one (both ~sqrt(T))."""
    return math.isqrt(length - 1) + 1 if length > 1 else 1


def read_span(
    method: torch.Tensor, iterations: torch.Tensor, final: torch.Tensor, block: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [lo, hi) of the next step output that the solver will read, per row.

    method, iterations, final, block: (R,) long. A step that knows how to skip work (cropping, caches) only has
    to produce y on this span; positions < lo are final already.
    """
    lo = final.clone()
    hi = torch.full_like(final, length)
    sequential = method == Method.SEQUENTIAL
    hi = torch.where(sequential, iterations + 1, hi)
    lo = torch.where(sequential, iterations, lo)
    window = method == Method.GS_JACOBI
    hi = torch.where(window, torch.clamp(final + block, max=length), hi)
    return lo, hi


def write_mask(
    method: torch.Tensor,
    iterations: torch.Tensor,
    block: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    new_final: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """(R, T) bool: positions whose value is replaced by the step output in this evaluation.

    Always inside the read span; always includes the newly certified positions [lo, new_final).
    """
    t = torch.arange(length, device=method.device)[None, :]
    inside = (t >= lo[:, None]) & (t < hi[:, None])
    certified = t < new_final[:, None]
    in_block_turn = (t % block[:, None]) == (iterations % block)[:, None]
    by_method = torch.where(
        (method == Method.JACOBI_GS)[:, None],
        in_block_turn,
        torch.ones_like(inside),  # jacobi and gs_jacobi: the whole span; sequential: its span is one position
    )
    return inside & (by_method | certified)
