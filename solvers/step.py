"""How the solvers call a user's step function (the solvers API: docs/ARCHITECTURE.md, "Contracts").

``step(x) -> y`` evaluates every equation on the current iterate, ``y[:, t] = f_t(x[:, :t])``; it must not let
``x[:, t:]`` influence ``y[:, t]`` (that is what makes the system lower-triangular and the solvers exact).

Optional keywords, detected from the signature (a named parameter; ``**kwargs`` does not count):
- ``rows``: the step may be called on a subset of rows, ``step(x_sub, rows=idx)`` with idx: (P,) long the
  original row indices, so per-row data it holds (fixed noise, inputs) can be selected. Converged rows are then
  never recomputed. Without it the step always sees the whole batch in the original order.
- ``span`` (only together with ``rows``): (P, 2) long, ``[lo, hi)`` per row: the positions of y the solver will
  read. Positions < lo are final; a step may skip work for them (caches, cropping) and leave y there arbitrary.

For bitwise exactness across batch compositions the step itself must be batch invariant: row i of its output
must not depend on how many rows it was given. Some CPU GEMM kernels are not (small row counts take a different
kernel); model steps pad their input to a safe row count (see ``samplers``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

Step = Callable[..., torch.Tensor]


def _named_parameters(step: Step) -> set[str]:
    try:
        parameters = inspect.signature(step).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return set()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in keyword}


class StepCaller:
    """Calls ``step`` on the pending rows in the richest form it accepts."""

    def __init__(self, step: Step) -> None:
        names = _named_parameters(step)
        self.step = step
        self.takes_rows = "rows" in names
        self.takes_span = self.takes_rows and "span" in names

    def __call__(self, x: torch.Tensor, rows: torch.Tensor, span: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: (B, T, *shape) all rows; rows: (P,) pending; returns y for those rows, (P, T, *shape)."""
        if self.takes_rows:
            kwargs: dict[str, Any] = {"rows": rows}
            if self.takes_span:
                kwargs["span"] = torch.stack(span, dim=1)
            return self.step(x[rows], **kwargs)
        y = self.step(x)
        if not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"step returned {shape}; expected shape {tuple(x.shape)}")
        return y if rows.numel() == x.shape[0] else y[rows]
