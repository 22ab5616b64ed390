"""What each registered model offers the service: its kind, shapes, sequential steps and methods.

Kinds (DESIGN.md section 4): "sampler" (autoregressive generative models, POST /sample), "classifier" (POST
/infer) and "sequence" (POST /gradient and /infer). The registry (models.registry) says what a model *is*; this
file says what parafeed can *do* with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.registry import Entry

SAMPLING_METHODS = ("sequential", "jacobi", "jacobi_gs", "gs_jacobi", "auto")
MADE_METHODS = ("sequential", "jacobi", "jacobi_gs", "gs_jacobi", "jacobi_split", "auto")
KIND_OF = {"made": "sampler", "pixelcnnpp": "sampler", "densenet": "classifier", "rnn": "sequence", "gru": "sequence"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # sampler | classifier | sequence
    family: str  # made | pixelcnnpp | densenet | rnn | gru
    shape: list[int]  # one sample (C, H, W), one input image, or one sequence (T,)
    sequential_steps: int  # dependent steps of the ordinary computation
    methods: list[str]
    description: str

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "family"}


def describe(entry: Entry) -> ModelInfo:
    cfg = entry.config
    family = entry.kind
    if family == "made":
        shape, steps = list(cfg.get("image_shape", [1, 28, 28])), int(cfg.get("input_size", 784))
        methods = list(MADE_METHODS if cfg.get("direct", True) else SAMPLING_METHODS)
    elif family == "pixelcnnpp":
        size, channels = int(cfg.get("image_size", 28)), int(cfg.get("channels", 1))
        shape, steps, methods = [channels, size, size], size * size, list(SAMPLING_METHODS)
    elif family == "densenet":
        layers = list(cfg.get("block_layers", [6, 6, 6]))
        shape, steps = [int(cfg.get("in_channels", 1)), 28, 28], int(sum(layers))
        methods = ["sequential", "jacobi", "auto"]  # /infer
    else:
        size = int(cfg.get("image_size", 10))
        shape, steps = [size * size], size * size
        methods = ["sequential", "jacobi", "scan", "auto"]  # /gradient (and /infer: sequential, jacobi)
    return ModelInfo(entry.name, KIND_OF[family], family, shape, steps, methods, entry.description)
