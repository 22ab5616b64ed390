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
