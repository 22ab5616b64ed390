"""The body of POST /infer, the same for every model family that answers it (DenseNet, RNNs).

A family supplies how to run the forward by the requested method (``Forward``), the sequential reference for
``verify`` and how outputs become predictions; this file times it and says honestly what was computed:
``exact`` only when the solve converged with ``tol=0``, ``verified`` with the max difference and bitwise equality
against the ordinary sequential forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


def residual(certified: bool, recompute: Callable[[], torch.Tensor], iterate: torch.Tensor) -> float:
    """max |step(x) - x| at the returned iterate. A solve certified with tol=0 reproduced every unknown, so its
    residual is 0 without another evaluation; otherwise ``recompute`` is step(x). Empty batches have none."""
    if certified or iterate.numel() == 0:
        return 0.0
    return float((recompute() - iterate).abs().max())


@dataclass(frozen=True)
class Forward:
    outputs: torch.Tensor  # (B, ...) logits or per-step predictions
    iterations: list[int]  # per input: solver evaluations (the sequential depth for "sequential")
    converged: bool
    residual: float  # max |step(x) - x| at the returned iterate (0 when certified with tol=0)


def infer_body(
    name: str, method: str, sequential_steps: int, tol: float, verify: bool, run: Callable[[], Forward],
    reference: Callable[[], torch.Tensor], predictions: Callable[[torch.Tensor], list[Any]],
) -> dict[str, Any]:  # fmt: skip
    """Run, time and (if asked) verify a forward; the JSON body of POST /infer (DESIGN.md section 4)."""
    start = time.perf_counter()
    with torch.inference_mode():
        forward = run()
        compute = (time.perf_counter() - start) * 1000
        verified = None
        if verify:
            expected = reference()
            verified = {"max_abs_diff": float((forward.outputs - expected).abs().max()),
                        "equal": bool(torch.equal(forward.outputs, expected))}  # fmt: skip
    return {
        "model": name,
        "method": method,
        "outputs": forward.outputs.tolist(),
        "predictions": predictions(forward.outputs),
        "iterations": forward.iterations,
        "sequential_steps": sequential_steps,
        "converged": forward.converged,
        "exact": forward.converged and tol == 0.0,
        "residual": forward.residual,
        "verified": verified,
        "timings_ms": {"queue": 0.0, "compute": round(compute, 3)},
    }
