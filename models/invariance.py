"""Batch invariance: row i of a model's output must not depend on how many rows were in the call.

The exact solvers compare a row's iterate with its image bit for bit, and the server batches rows of unrelated
requests; both need f(x)[i] to be a function of x[i] alone, to the last bit. CPU GEMM kernels break this for
some row counts: with oneDNN/MKL on x86, a call whose per-thread row chunk is not a multiple of 4 takes a
different micro-kernel for the remainder and rounds differently (measured with torch 2.13: row counts 1-3, 5-7,
9-11 with 2 threads; also 17-19, 25-27 with 16). Row counts that are multiples of 8 took the same kernel at every
thread count we tried (1-16), so model steps pad their input to such a count and drop the padding.

This guards the CPU kernels we measured; on other devices bitwise equality is checked, not assumed (``verify``).
"""

from __future__ import annotations

import torch

ROW_MULTIPLE = 8  # pad row counts to a multiple of this; see the module docstring for the measurement


def padded_rows(rows: int, multiple: int = ROW_MULTIPLE) -> int:
    """The row count a call with ``rows`` rows is padded to (at least ``multiple``)."""
    return max(multiple, -(-rows // multiple) * multiple)


def pad_rows(x: torch.Tensor, multiple: int = ROW_MULTIPLE) -> torch.Tensor:
    """x: (N, ...) -> (padded_rows(N), ...), extra rows zero. Slice the result back with ``[:N]``."""
    n = x.shape[0]
    target = padded_rows(n, multiple)
    if target == n:
        return x
    return torch.cat([x, x.new_zeros((target - n, *x.shape[1:]))])
