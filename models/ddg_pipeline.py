"""The DDG schedule on one rank (Huo et al., ICML 2018, Algorithm 1), for any chain of modules (``models.ddg``).

Module k of K (rank k) keeps the graph of each forward until the error gradient for it arrives from rank k+1: that
is d_k = K-1-k iterations later, since rank k+1 sends the error of iteration s during its own iteration
s + d_{k+1}, and rank k consumes it during iteration s + d_k = s + d_{k+1} + 1. So in iteration t rank k:
  1. forward: x^t (rank 0: the mini-batch; else received from rank k-1), h^t = module(x^t) with the weights of
     now, kept with its graph; h^t sent to rank k+1 (the last rank instead takes its loss, backpropagates at
     once, sends the error at its input to rank k-1 and steps: no delay);
  2. backward, once more than d_k forwards are kept: the oldest (iteration t - d_k) receives its error from
     rank k+1, backpropagates through the weights it was computed with, sends the error at its input to rank k-1
     and steps the module with that delayed gradient.
``drain`` finishes the kept forwards (end of an epoch, a clean stop). Sends are non-blocking (``isend``), dropped
once completed (a pending send holds its tensor) and waited for at the drain; receives block only when their data
is needed. Activations go downstream with tag 0,
errors upstream with tag 1.

Shapes: whatever the modules pass, (b, ...) per mini-batch of b examples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

ACTIVATION, ERROR = 0, 1  # message tags


@dataclass
class Stage:
    """One module as the schedule sees it."""

    forward: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]  # x -> (h with its graph, the weights it used)
    apply: Callable[[Any], None]  # one optimizer step with the gradients that reached those weights


class Pipeline:
    """Rank ``rank`` of ``modules`` running its ``stage`` in the DDG schedule (point-to-point over the default
    process group; ``modules == 1`` needs none)."""

    def __init__(self, stage: Stage, rank: int, modules: int, device: torch.device | str = "cpu") -> None:
        self.stage, self.rank, self.last, self.device = stage, rank, modules - 1, device
        self.kept: deque[tuple[torch.Tensor, torch.Tensor, Any]] = deque()
        self.sends: list[Any] = []

    @property
    def delay(self) -> int:
        """d_k = K-1-k: how many iterations old this module's gradients are."""
        return self.last - self.rank

    def step(
        self, first: Callable[[], torch.Tensor], shape: tuple[int, ...], loss: Callable[[torch.Tensor], torch.Tensor]
    ) -> float | None:  # fmt: skip
        """One iteration. ``first()``: rank 0's input; ``shape``: the input of other ranks; ``loss(h)``: the last
        rank's loss of its output. Returns the loss on the last rank, None elsewhere."""
        if self.rank == 0:
            x = first()
        else:
            x = torch.empty(shape, device=self.device)
            dist.recv(x, self.rank - 1, tag=ACTIVATION)
            x.requires_grad_(True)
        out, weights = self.stage.forward(x)
        self.sends = [request for request in self.sends if not request.is_completed()]  # done sends free their data
        if self.rank < self.last:
            self.sends.append(dist.isend(out.detach(), self.rank + 1, tag=ACTIVATION))
            self.kept.append((x, out, weights))
            if len(self.kept) > self.delay:
                self._backward(*self.kept.popleft())
            return None
        value = loss(out)
        value.backward()  # type: ignore[no-untyped-call]
        self._send_error(x)
        self.stage.apply(weights)
        return float(value.item())

    def drain(self) -> None:
        """Every kept forward receives its error and steps the module; then every send has completed."""
        while self.kept:
            self._backward(*self.kept.popleft())
        for request in self.sends:
            request.wait()
        self.sends.clear()

    def _backward(self, x: torch.Tensor, out: torch.Tensor, weights: Any) -> None:
        error = torch.empty_like(out)
        dist.recv(error, self.rank + 1, tag=ERROR)
        out.backward(error)  # type: ignore[no-untyped-call]
        self._send_error(x)
        self.stage.apply(weights)

    def _send_error(self, x: torch.Tensor) -> None:
        if self.rank > 0 and x.grad is not None:
            self.sends.append(dist.isend(x.grad, self.rank - 1, tag=ERROR))
