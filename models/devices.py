"""Which device a model runs on: one rule for training, evaluation, the engine and the server.

"auto" (or None) takes CUDA when it is available and the CPU otherwise; asking for CUDA without it is an error,
never a silent fallback to a device that is slower by orders of magnitude.
"""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None: CUDA if available, else CPU. "cuda[:N]" without a GPU raises ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available")
    return torch.device(str(device))
