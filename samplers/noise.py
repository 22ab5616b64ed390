"""Per-sample noise as a pure function of (model, seed, i): what makes sampling a deterministic system.

All randomness of sample i is drawn before solving, from a generator seeded by SHA-256 of (model, seed, i), on
the CPU (so every device and worker draws the same numbers), then moved to the compute device. Sample i is thus
the same whatever the batch size, the batch's other members, the method or the worker (Song et al., ICML 2021,
arXiv 2002.03629, sec. 4.1: the noise must be fixed before solving, or Jacobi and sequential disagree).
"""

from __future__ import annotations

import hashlib
import secrets

import torch

UNIFORM_EPS = 1e-5  # keeps log(u), log(1-u) and log(-log u) finite (the official code's clamp)
MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A fresh seed for requests that do not give one (echoed back so the answer can be reproduced)."""
    return secrets.randbelow(2**31)


def sample_seed(model: str, seed: int, index: int) -> int:
    digest = hashlib.sha256(f"parafeed/{model}/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & MAX_SEED


def uniforms(model: str, seed: int, indices: list[int] | range, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) float32 uniforms in [UNIFORM_EPS, 1 - UNIFORM_EPS]; row n depends only on (model, seed, n)."""
    rows = []
    for index in indices:
        g = torch.Generator().manual_seed(sample_seed(model, seed, index))
        rows.append(torch.rand(shape, generator=g))
    out = torch.stack(rows) if rows else torch.empty((0, *shape))
    return out.clamp(UNIFORM_EPS, 1.0 - UNIFORM_EPS)
