"""Benchmark-only variants of the served sampling systems: the baselines that the served methods are measured against.

They are not served: their outputs equal the served map's only to float32 rounding (another GEMM width, another
kernel), so the benchmark compares their samples with the reference instead of assuming equality.

- ``CroppedMade``: MADE's sequential sampler computing only the logits the solver reads at each step (the hidden
  layers in full, one output column).
- ``UncachedPixelCNNpp``: PixelCNN++ evaluated band by band but every band every time (what the caches save).
- ``PlainPixelCNNpp``: the textbook PixelCNN++ sampler, ``model.forward`` on the whole image per evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from models.dmol import dmol_sample
from models.pixelcnnpp_bands import BAND, BandCache
from samplers.families.made import MadeSystem
from samplers.families.pixelcnnpp import PixelCNNppSystem


class CroppedMade(MadeSystem):
    def evaluate(
        self, x: torch.Tensor, noise: torch.Tensor, cache: Any = None, slots: torch.Tensor | None = None,
        span: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        if span is None:
            return super().evaluate(x, noise)
        lo, hi = int(span[:, 0].min()), int(span[:, 1].max())
        model, columns = self.model, slice(lo, hi)
        logits = model.hidden_logits(x, columns)
        if model.direct is not None:
            logits = logits + (model.direct_sum(x, columns) + model.direct.bias[columns])
        y = x.clone()
        y[:, lo:hi] = (noise[:, lo:hi] < torch.sigmoid(logits)).to(x.dtype)
        return y


class UncachedPixelCNNpp(PixelCNNppSystem):
    def band_range(self, cache: BandCache | None, slots: torch.Tensor, span: torch.Tensor | None) -> tuple[int, int]:
        return 0, self.size // BAND


class PlainPixelCNNpp(PixelCNNppSystem):
    def evaluate(
        self, x: torch.Tensor, noise: torch.Tensor, cache: BandCache | None = None, slots: torch.Tensor | None = None,
        span: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        params = self.model(self.to_images(x))
        levels = dmol_sample(params, noise[:, : self.nr_mix], noise[:, self.nr_mix :], self.nr_mix)
        return levels.flatten(2).transpose(1, 2)
