"""Certificates: a candidate is the sequential sample once one evaluation of the reference map reproduces it.

Sampling is a lower-triangular system x = F(x) (``samplers.system``: F is the family's reference step, the map
the ordinary sequential sampler applies one position at a time). Such a system has exactly one solution, so if
F(x) == x bit for bit on every position, x *is* the sequential sample, however it was produced: an incremental
sampler that sums in another order (``models.made_degrees``), another kernel or batch shape, a forecast. A row
that fails is finished by Jacobi on F from the candidate: each further evaluation certifies at least one more
position (``solvers.batch``), so the repair is exact by the same argument and costs nothing where the candidate
was right (Song et al., ICML 2021, arXiv 2002.03629, sec. 3: Jacobi from any start reaches the fixed point).

This is the one mechanism behind the fast paths, ``verify`` (certify the answer: one evaluation, not a second
sequential solve) and continuous verification (a served row certified again, alone, in a spare row).

How an answer's exactness was established (``SampleResponse.exactness``):
- ``sequential``: the reference sampler itself, one position per evaluation of F (bitwise by construction);
- ``fixed point``: a solver iterated F itself until F(x) == x (Jacobi and the hybrids);
- ``certified``: a fast-path candidate, reproduced by one evaluation of F for every sample;
- ``repaired``: some candidates were not, and were finished by Jacobi on F (``repaired`` counts them);
- ``not converged``: ``max_iterations`` stopped a solver first (``converged: false``).
"""

from __future__ import annotations

import torch

from samplers.system import SamplingSystem
from samplers.work import RowSet, Solved
from solvers import Schedule

SEQUENTIAL, FIXED_POINT, CERTIFIED, REPAIRED, NOT_CONVERGED = (
    "sequential", "fixed point", "certified", "repaired", "not converged",
)  # fmt: skip
REFERENCE = "jacobi"  # the method whose plan evaluates the reference map F


def certificate_rows(system: SamplingSystem, noise: torch.Tensor, candidate: torch.Tensor) -> RowSet:
    """Rows that certify ``candidate`` (N, T, *shape) for ``noise`` (N, ...): Jacobi on F from the candidate.
    A row is certified when it converges at its first evaluation; otherwise Jacobi finishes it (exactly)."""
    plan = system.plan(REFERENCE)
    schedule = Schedule(REFERENCE, system.block_size)
    x0 = candidate.to(device=system.device, dtype=system.dtype)
    return RowSet((system.name, plan.variant), system, plan, noise, schedule, x0)


def certified(solved: Solved) -> list[bool]:
    """Per row of certificate rows: did one evaluation of F reproduce the candidate?"""
    return [ok and it == 1 for it, ok in zip(solved.iterations, solved.converged, strict=True)]


def certificate_exactness(solved: Solved) -> tuple[str, int]:
    """(exactness, repaired) of answers that went through certificate rows."""
    if not all(solved.converged):
        return NOT_CONVERGED, 0
    repaired = sum(not ok for ok in certified(solved))
    return (REPAIRED if repaired else CERTIFIED), repaired
