"""Random lower-triangular test systems for the solver tests and the synthetic benchmark's twins.

Each system has B rows of T unknowns of shape ``shape`` and per-row data (noise), so that ``rows`` matters.
``evaluate(x, rows)`` computes y[:, t] = f_t(x[:, :t]) with a batch-invariant formulation (elementwise products
and a reduction, never a GEMM whose kernel depends on the row count), so row results never depend on the batch.
``matmul=True`` uses F.linear instead (fast, not batch invariant: only for steps that always see the whole batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("linear", "tanh", "bernoulli", "bernoulli_bool", "quantized", "chain", "star")


def block_lower_mask(length: int, width: int) -> torch.Tensor:
    """(N, N) with N = length * width: output unknown t may read input unknown s only if s < t."""
    block = torch.arange(length * width) // width
    return block[:, None] > block[None, :]


@dataclass
class System:
    kind: str
    batch: int
    length: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    weight: torch.Tensor  # (N, N) strictly block-lower, N = T * prod(shape)
    bias: torch.Tensor  # (N,)
    noise: torch.Tensor  # (B, N) per-row uniforms in (0, 1)
    matmul: bool = False

    @property
    def width(self) -> int:
        return int(torch.tensor(self.shape).prod()) if self.shape else 1

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(self.weight.dtype)
        if self.matmul:
            return F.linear(flat, self.weight, self.bias)
        return (self.weight[None] * flat[:, None, :]).sum(-1) + self.bias

    def evaluate(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.kind == "chain":  # s_t = s_{t-1} + 1: Jacobi needs all T evaluations
            y = torch.ones_like(x)
            y[:, 1:] = x[:, :-1] + 1
            return y
        if self.kind == "star":  # s_t = g(s_0) for t > 0: settles in three evaluations
            y = torch.full_like(x, 0.75)
            y[:, 1:] = torch.tanh(x[:, :1] + self.noise[rows].reshape(x.shape)[:, 1:])
            return y
        pre = self._pre(x)
        u = self.noise[rows]
        if self.kind == "linear":
            out = pre
        elif self.kind == "tanh":
            out = torch.tanh(pre)
        elif self.kind in ("bernoulli", "bernoulli_bool"):
            out = u < torch.sigmoid(pre)
        elif self.kind == "quantized":
            out = torch.clamp((torch.sigmoid(pre + torch.logit(u)) * 5).floor(), max=4)
        else:
            raise ValueError(self.kind)
        return out.reshape(b, self.length, *self.shape).to(self.dtype)

    def step(self, with_rows: bool) -> Callable[..., torch.Tensor]:
        if with_rows:

            def step_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                return self.evaluate(x, rows)

            return step_rows

        def step_full(x: torch.Tensor) -> torch.Tensor:
            return self.evaluate(x, torch.arange(x.shape[0]))

        return step_full

    def x0(self) -> torch.Tensor:
        return torch.zeros(self.batch, self.length, *self.shape, dtype=self.dtype)

    def reference(self) -> torch.Tensor:
        """The sequential solution by a plain loop, independent of the solver code."""
        x = self.x0()
        rows = torch.arange(self.batch)
        for t in range(self.length):
            x[:, t] = self.evaluate(x, rows)[:, t]
        return x


DTYPES = {
    "linear": torch.float64,
    "tanh": torch.float32,
    "bernoulli": torch.float32,
    "bernoulli_bool": torch.bool,
    "quantized": torch.int64,
    "chain": torch.int64,
    "star": torch.float64,
}


def make_system(
    kind: str, batch: int, length: int, shape: tuple[int, ...] = (), seed: int = 0, matmul: bool = False
) -> System:
    g = torch.Generator().manual_seed(seed)
    width = 1
    for d in shape:
        width *= d
    n = length * width
    weight_dtype = torch.float64 if kind == "linear" else torch.float32
    scale = {"linear": 1.0, "tanh": 2.0}.get(kind, 3.0) / max(n, 1) ** 0.5
    weight = torch.randn(n, n, generator=g, dtype=weight_dtype) * scale
    weight = weight * block_lower_mask(length, width)
    bias = torch.randn(n, generator=g, dtype=weight_dtype)
    noise = torch.rand(batch, n, generator=g).clamp(1e-6, 1 - 1e-6)
    if kind == "star":
        noise = noise.to(torch.float64)
    return System(kind, batch, length, shape, DTYPES[kind], weight, bias, noise, matmul)
