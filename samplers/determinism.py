"""Settings under which the same computation gives the same bits: required for exact, checkable answers.

TF32 matmuls/convolutions round differently from float32; cuDNN's benchmark mode picks kernels by timing, so the
choice (and the rounding) can vary from call to call. parafeed turns both off and asks cuDNN for deterministic
kernels. CPU kernels need no flag, but some are not batch invariant (see ``models.invariance``).
"""

from __future__ import annotations

import torch


def make_deterministic() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def resolve_device(device: str | None) -> torch.device:
    """ "auto"/None: CUDA if available, else CPU. "cuda" without a GPU is an error, not a silent fallback."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(str(device))
