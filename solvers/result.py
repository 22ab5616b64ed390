"""What a solve returns (the solvers API: docs/ARCHITECTURE.md, "Contracts")."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SolveResult:
    """The outcome of ``solvers.solve`` for a batch of B systems of T unknowns.

    x: (B, T, *shape) the solution: exact (or within ``tol``) on converged rows; on the others, exact on the
       certified prefix ``final`` and the last iterate beyond it.
    iterations: (B,) long, step evaluations each row needed, the confirming one included.
    converged: (B,) bool.
    evaluations: calls of ``step`` in total (rows share calls, so this is the sequential depth of the solve).
    final: (B,) long, length of the certified prefix (T where converged).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    evaluations: int
    final: torch.Tensor
    method: str
    block_size: int

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())
