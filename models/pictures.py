"""Pictures: a grid of images as one PNG, for samples and test images (people would rather look than read)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) of levels 0..255 (integers), {0, 1} (binary floats) or [0, 1] floats -> uint8."""
    if images.dim() == 3:
        images = images[:, None]
    if images.dtype == torch.uint8:
        return images
    if images.is_floating_point():
        scaled = images.clamp(0, 1) * 255.0
        return torch.round(scaled).to(torch.uint8)
    return images.clamp(0, 255).to(torch.uint8)


def grid(images: torch.Tensor, columns: int | None = None, pad: int = 2, scale: int = 2) -> Image.Image:
    """Tile (N, C, H, W) images into one picture, ``columns`` per row (default: about square)."""
    images = to_uint8(images.detach().cpu())
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    canvas = torch.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i]
    array = canvas.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if c == 1 else array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(images, columns).save(path)
    return path


def png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """One image (C, H, W) as PNG bytes (for the API's ``format: "png"``)."""
    buffer = io.BytesIO()
    grid(image[None], columns=1, pad=0, scale=scale).save(buffer, format="PNG")
    return buffer.getvalue()
