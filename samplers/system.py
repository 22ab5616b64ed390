"""A sampling system: what a sampler family contributes to "sample = solve a lower-triangular system".

Each sampler family turns its network and fixed per-sample noise into a step over T unknowns:
``evaluate(x, noise)[:, t] = f_t(x[:, :t], noise)`` for any subset of rows (the noise rows travel with them), plus
an initial guess and a decoder to images. A family may keep per-row work between evaluations in a cache (slots
are cache rows; ``span`` says which positions will be read, so final positions cost nothing). A sampler method
maps to a ``Plan``: the solver method and the step that runs it, or a fast path whose candidate one evaluation of
the reference map certifies (``samplers.certify``).

``SystemStep`` is the one adapter from ``evaluate`` to a ``solvers`` step: the library passes it to
``solvers.solve`` (``samplers.work.solve_rows``), and the server's row batch (``samplers.rows``) advances the same
step inside its own ``FixedPointBatch``, with rows of many requests.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

Evaluate = Callable[..., torch.Tensor]
# A fast path: (noise (N, ...), block size or None) -> a generator that yields between small pieces and returns the
# candidate (N, T, *unknown_shape) and each row's depth (its sequential steps), to be certified (samplers.certify).
Propose = Callable[[torch.Tensor, int | None], Generator[None, None, tuple[torch.Tensor, list[int]]]]


@dataclass(frozen=True)
class Plan:
    """How a sampler method runs: rows of one model with the same ``variant`` can share one evaluation."""

    solver_method: str  # a solvers method: sequential | jacobi | jacobi_gs | gs_jacobi
    evaluate: Evaluate  # the step, with ``SamplingSystem.evaluate``'s signature
    variant: str  # the step's name (e.g. "evaluate", "evaluate_split")
    propose: Propose | None = None  # a fast path: its candidate is certified by ``evaluate`` (the reference map)


class SamplingSystem(Protocol):
    name: str  # registry name of the model: part of the noise seed
    unknowns: int  # T: sequential steps of the ordinary sampler
    unknown_shape: tuple[int, ...]  # shape of one unknown ((): a scalar; (C,): a pixel's sub-pixels)
    image_shape: tuple[int, int, int]  # (C, H, W) of one decoded sample
    levels: int  # values of one sub-pixel: 0 .. levels - 1 (2: binary images, 256: 8-bit)
    block_size: int  # natural block for the hybrids (an image row)
    dtype: torch.dtype  # of the unknowns
    device: torch.device  # where the model runs
    methods: tuple[str, ...]  # sampler methods this system offers ("auto" aside)

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        """(N, ...) fixed noise of samples ``indices`` of a request with ``seed``, on the model's device."""
        ...

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        """(N, T, *unknown_shape) starting iterate."""
        ...

    def plan(self, method: str) -> Plan:
        """How a sampler method (one of ``methods``) runs."""
        ...

    def new_cache(self, capacity: int) -> Any:
        """Per-solve state for ``capacity`` slots (None for systems that keep none)."""
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
        """(N, T, *unknown_shape) -> (N, C, H, W) integer images (levels 0 .. levels - 1)."""
        ...


class StatelessSystem:
    """Defaults of a sampling system that keeps nothing between evaluations and has one step for every method."""

    def new_cache(self, capacity: int) -> Any:
        return None

    def reset(self, cache: Any, slots: torch.Tensor) -> None:
        return None

    def plan(self, method: str) -> Plan:
        return Plan(method, self.evaluate, "evaluate")

    def evaluate(self, x: torch.Tensor, noise: torch.Tensor, cache: Any = None, slots: torch.Tensor | None = None,
                 span: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError


class SystemStep:
    """``evaluate`` as a ``solvers`` step over rows that each carry their noise and a cache slot.

    noise: (R, ...) per row; slots: (R,) long cache slots. Called as ``step(x, rows=idx, span=...)``.
    """

    def __init__(self, system: SamplingSystem, evaluate: Evaluate, capacity: int) -> None:
        self.system, self.evaluate = system, evaluate
        self.cache = system.new_cache(capacity)
        self.noise: torch.Tensor | None = None
        self.slots = torch.empty(0, dtype=torch.long, device=system.device)

    def hold(self, noise: torch.Tensor, slots: torch.Tensor) -> None:
        """Rows ``noise`` (n, ...) take cache ``slots`` (n,): appended after the rows held so far."""
        slots = slots.to(self.system.device)
        self.system.reset(self.cache, slots)
        self.noise = noise if self.noise is None else torch.cat([self.noise, noise])
        self.slots = torch.cat([self.slots, slots])

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only rows ``rows`` ((K,) long), renumbered 0..K-1 in that order."""
        assert self.noise is not None
        rows = rows.to(self.system.device)
        self.noise, self.slots = self.noise[rows], self.slots[rows]

    def __call__(self, x: torch.Tensor, rows: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        assert self.noise is not None
        rows = rows.to(self.system.device)
        return self.evaluate(x, self.noise[rows], self.cache, self.slots[rows], span)
