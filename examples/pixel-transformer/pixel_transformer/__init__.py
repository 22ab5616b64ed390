"""parafeed plugin: a causal pixel transformer over Fashion-MNIST, served by ``parafeed serve`` once installed.

The entry point ``parafeed.models`` of this package names ``MODEL`` below; parafeed then builds checkpoints of
kind "pixel-transformer" with ``PixelTransformer(PixelTransformerConfig(**config))`` and serves the models of the
registry directory shipped here (``checkpoints/manifest.json``) through POST /sample.
"""

from pathlib import Path

from pixel_transformer.model import PixelTransformer, PixelTransformerConfig
from samplers.plugins import AutoregressiveModel

MODEL = AutoregressiveModel(
    kind="pixel-transformer",
    config=PixelTransformerConfig,
    build=PixelTransformer,
    levels=PixelTransformerConfig.levels,
    shape=(1, PixelTransformerConfig.size, PixelTransformerConfig.size),
    description="causal transformer over 14x14 Fashion-MNIST in 16 gray levels (plugin example)",
    checkpoints=Path(__file__).resolve().parent / "checkpoints",
)
