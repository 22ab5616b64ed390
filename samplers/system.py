"""A sampling system: what a model family contributes to "sample = solve a lower-triangular system".

Each family turns its network and fixed per-sample noise into a step over T unknowns:
``evaluate(x, noise)[:, t] = f_t(x[:, :t], noise)`` for any subset of rows (the noise rows travel with them), plus an
initial guess and a decoder to images. A family may keep per-row work between evaluations in a cache (slots are
cache rows; ``span`` says which positions will be read, so final positions cost nothing). ``solve_system`` runs
the one solver loop of ``solvers.solve`` on it; the server's worker advances the same ``evaluate`` inside its own
``FixedPointBatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from solvers import FixedPointBatch, SolveResult, solve


class SamplingSystem(Protocol):
    name: str  # registry name of the model: part of the noise seed
    unknowns: int  # T: sequential steps of the ordinary sampler
    unknown_shape: tuple[int, ...]  # shape of one unknown ((): a binary pixel; (C,): a pixel's sub-pixels)
    image_shape: tuple[int, int, int]  # (C, H, W) of one decoded sample
    block_size: int  # natural block for the hybrids (an image row)
    dtype: torch.dtype  # of the unknowns
    device: torch.device  # where the model runs

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        """(N, ...) fixed noise of samples ``indices`` of a request with ``seed``, on the model's device."""
        ...

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        """(N, T, *unknown_shape) starting iterate."""
        ...

    methods: tuple[str, ...]  # sampler methods this family offers ("auto" aside)

    def plan(self, method: str) -> tuple[str, Callable[..., torch.Tensor]]:
        """(solver method, step function with ``evaluate``'s signature) for a sampler method."""
        ...

    def new_cache(self, capacity: int) -> Any:
        """Per-solve state for ``capacity`` slots (None for families that keep none)."""
        ...

    def reset(self, cache: Any, slots: torch.Tensor) -> None:
        """Forget what the cache holds for these slots (new rows took them)."""
        ...

    def evaluate(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        cache: Any = None,
        slots: torch.Tensor | None = None,
        span: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One parallel step on N rows: (N, T, *unknown_shape) -> same shape.

        With a cache: slots (N,) are the rows' cache slots and span (N, 2) the positions [lo, hi) the solver will
        read (positions < lo are final); output outside the span may be arbitrary.
        """
        ...

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, *unknown_shape) -> (N, C, H, W) integer images (0/1 or 0..255)."""
        ...


@dataclass(frozen=True)
class SystemSolve:
    result: SolveResult
    samples: torch.Tensor  # (N, C, H, W) integer images


def solve_system(
    system: SamplingSystem,
    noise: torch.Tensor,
    method: str = "jacobi",
    block_size: int | None = None,
    max_iterations: int | None = None,
    x0: torch.Tensor | None = None,
    callback: Callable[[FixedPointBatch], None] | None = None,
) -> SystemSolve:
    """Solve the sampling systems of the given noise rows with ``solvers.solve`` (per-row stopping)."""

    if method not in system.methods:
        raise ValueError(f"method must be one of {', '.join(system.methods)} for {system.name}; got {method!r}")
    solver_method, evaluate = system.plan(method)
    cache = system.new_cache(noise.shape[0])

    def step(x: torch.Tensor, rows: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        return evaluate(x, noise[rows], cache, rows, span)

    start = system.initial_guess(noise) if x0 is None else x0
    block = block_size or system.block_size
    result = solve(
        step, start, method=solver_method, block_size=block, max_iterations=max_iterations, callback=callback
    )
    return SystemSolve(result, system.decode(result.x))
