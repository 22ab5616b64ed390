"""The inference task (POST /infer), the same for every family that answers it (DenseNet, the recurrent models).

A family supplies how to run the forward by the requested method (pieces that return a ``Forward``), the
sequential reference for ``verify`` (pieces too) and how outputs become predictions; this file turns them into
``SliceWork`` and says honestly what was computed: ``exact`` only when the solve converged with ``tol=0``,
``verified`` with the max difference and bitwise equality against the ordinary sequential forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from samplers.inputs import as_tensor, check_batch
from samplers.requests import InferRequest, InferResponse, InferVerified
from samplers.work import PIECE_ROWS, Context, Pieces, Respond, SliceWork

if TYPE_CHECKING:
    from samplers.engine import Engine


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


def check_infer(request: InferRequest, parse: Callable[[Any, str], np.ndarray], limit: int) -> None:
    """Inputs parse (``parse(value, field)`` raises InputError) and the batch fits ``limit``."""
    inputs = None if request.inputs is None else parse(request.inputs, "inputs")
    check_batch(request.batch, inputs, limit)


def request_inputs(engine: Engine, request: Any, parse: Callable[[Any, str], np.ndarray]) -> torch.Tensor:
    """The request's inputs as a tensor on the engine's device: given, or test-set inputs picked by ``seed``."""
    if request.inputs is not None:
        inputs = as_tensor(parse(request.inputs, "inputs"))
    else:
        inputs = engine.test_inputs(request.model, request.batch, request.seed)
    return inputs.to(engine.device)


def rows_in_pieces(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> Pieces[torch.Tensor]:
    """``fn(inputs)`` computed ``PIECE_ROWS`` rows at a time, pausing between them (row-wise fn: the same bits)."""
    outputs = []
    for chunk in torch.split(inputs, PIECE_ROWS):
        outputs.append(fn(chunk))
        yield
    return torch.cat(outputs) if outputs else fn(inputs)


def infer_work(
    request: InferRequest, method: str, sequential_steps: int, run: Callable[[], Pieces[Forward]],
    reference: Callable[[], Pieces[torch.Tensor]], predictions: Callable[[torch.Tensor], list[Any]],
) -> SliceWork:  # fmt: skip
    """Run (and, if asked, verify) a forward, as work done in slices."""

    def pieces() -> Pieces[Respond]:  # driven under inference mode (no context spans a yield)
        forward = yield from run()
        verified = None
        if request.verify:
            expected = yield from reference()
            verified = InferVerified(max_abs_diff=float((forward.outputs - expected).abs().max()),
                                     equal=bool(torch.equal(forward.outputs, expected)))  # fmt: skip

        def respond(context: Context) -> InferResponse:
            return InferResponse.model_construct(
                model=request.model, method=method, outputs=forward.outputs.tolist(),
                predictions=predictions(forward.outputs), iterations=forward.iterations,
                sequential_steps=sequential_steps, converged=forward.converged,
                exact=forward.converged and request.tol == 0.0, residual=forward.residual, verified=verified,
                timings_ms=context.timings(),
            )  # fmt: skip

        finished: Respond = respond
        return finished

    return SliceWork(pieces())
