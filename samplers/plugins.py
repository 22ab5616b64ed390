"""Serving your own autoregressive model: the plugin contract, discovery, and the check made at load.

A plugin declares an ``AutoregressiveModel``: how to build its ``nn.Module`` from a config dataclass, how many
values each position takes, the shape of one sample, and (optionally) a registry directory with its safetensors
checkpoints and ``manifest.json``. It is found through the Python entry point group ``parafeed.models`` (an
installed package's ``[project.entry-points."parafeed.models"]``), or through the ``plugins`` setting
(``PARAFEED_PLUGINS=package.module:NAME``). Its models are then served like the shipped ones: GET /models, POST
/sample with every generic method (``samplers.families.autoregressive``), ``verify``, ``auto``, iteration-level
batching, Redis workers. Nothing in parafeed is edited.

The contract, checked when a model is loaded (``check_autoregressive``): ``forward(x)`` maps x: (B, T) float32
holding values 0 .. levels - 1 (a sample flattened in raster order, channels first) to logits (B, T, levels), and
output t depends on inputs < t only. Two probes: gradients (d output_t / d x_s must be exactly 0 for s >= t,
where the input path is differentiable) and perturbations (changing inputs >= t must leave outputs <= t bitwise
unchanged). A model that fails either is refused with the pair of positions that gave it away.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.invariance import pad_rows
from models.registry import register_kind

log = logging.getLogger("parafeed.plugins")
ENTRY_POINT_GROUP = "parafeed.models"
PROBE_ROWS = 32  # rows per probe forward (one probed position per row)


@dataclass(frozen=True)
class AutoregressiveModel:
    """A plugin's autoregressive model, served by POST /sample like the shipped ones."""

    kind: str  # the "kind" of its manifest entries and checkpoints
    config: type  # a dataclass; a manifest entry's "config" holds its fields
    build: Callable[[Any], nn.Module]  # config -> module: forward(x (B, T) float32) -> logits (B, T, levels)
    levels: int  # values each position takes: 0 .. levels - 1
    shape: tuple[int, int, int]  # (C, H, W) of one sample; T = C * H * W, flattened in raster order
    description: str = ""  # what /models says when a manifest entry has no description
    checkpoints: str | Path | None = None  # a registry directory shipped with the plugin (manifest.json + files)

    @property
    def length(self) -> int:
        c, h, w = self.shape
        return c * h * w


class NotAutoregressiveError(ValueError):
    """A plugin model whose output t depends on an input at t or later: it cannot be solved exactly."""


def load_plugins(paths: Sequence[str] = ()) -> list[AutoregressiveModel]:
    """Every plugin model installed (entry points) or named in ``paths`` ("module:NAME"), registered once."""
    return list(_load(tuple(paths)))


@lru_cache(maxsize=8)
def _load(paths: tuple[str, ...]) -> tuple[AutoregressiveModel, ...]:
    from samplers.families import register
    from samplers.families.autoregressive import AutoregressiveFamily

    found: list[tuple[str, Any]] = [(ep.value, ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    found += [(path, path) for path in paths]
    specs = []
    for source, where in found:
        spec = where.load() if not isinstance(where, str) else _import(where)
        if not isinstance(spec, AutoregressiveModel):
            raise TypeError(f"plugin {source} is a {type(spec).__name__}, not a samplers.plugins.AutoregressiveModel")
        register_kind(spec.kind, spec.config, spec.build)
        register(AutoregressiveFamily(spec))
        specs.append(spec)
        log.info("plugin model kind loaded", extra={"kind": spec.kind, "source": source})
    return tuple(specs)


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"a plugin is named as 'package.module:NAME'; got {path!r}")
    return getattr(importlib.import_module(module), name)


def checkpoint_dirs(specs: Sequence[AutoregressiveModel]) -> list[Path]:
    return [Path(spec.checkpoints) for spec in specs if spec.checkpoints is not None]


def check_autoregressive(model: nn.Module, spec: AutoregressiveModel, name: str, seed: int = 0) -> None:
    """Refuse a model whose output t sees inputs >= t (raises NotAutoregressiveError), or has the wrong shape."""
    length, levels = spec.length, spec.levels
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    positions = torch.arange(length)
    for chunk in torch.split(positions, PROBE_ROWS):
        x = torch.randint(0, levels, (chunk.numel(), length), generator=g).float().to(device)
        _gradient_probe(model, x, chunk.to(device), name, levels)
        _perturbation_probe(model, x, chunk.to(device), name, levels, g)


def _forward(model: nn.Module, x: torch.Tensor, name: str, levels: int) -> torch.Tensor:
    out = model(pad_rows(x))[: x.shape[0]]
    expected = (*x.shape, levels)
    if tuple(out.shape) != expected:
        raise NotAutoregressiveError(f"{name}: forward(x) must return logits of shape {expected}; got "
                                      f"{tuple(out.shape)}")  # fmt: skip
    return out


def _gradient_probe(model: nn.Module, x: torch.Tensor, t: torch.Tensor, name: str, levels: int) -> None:
    """Row i asks which inputs output t[i] reads: its gradient must vanish at every s >= t[i]."""
    with torch.enable_grad():
        inputs = x.clone().requires_grad_(True)
        out = _forward(model, inputs, name, levels)
        rows = torch.arange(x.shape[0], device=x.device)
        weights = torch.linspace(0.5, 1.5, levels, device=x.device)
        picked = (out[rows, t] * weights).sum()
        (grad,) = torch.autograd.grad(picked, inputs, allow_unused=True)
    if grad is None:  # the input path is not differentiable (e.g. an embedding of levels): the other probe decides
        return
    forbidden = torch.arange(x.shape[1], device=x.device)[None, :] >= t[:, None]
    leak = (grad != 0) & forbidden
    if bool(leak.any()):
        i, s = (int(v) for v in torch.nonzero(leak)[0])
        raise NotAutoregressiveError(
            f"{name} is not autoregressive: output {int(t[i])} has a nonzero gradient ({float(grad[i, s]):.3g}) "
            f"with respect to input {s}; output t may read inputs < t only"
        )


def _perturbation_probe(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, name: str, levels: int, g: torch.Generator
) -> None:
    """Changing every input >= t[i] must leave outputs 0..t[i] of row i unchanged, bit for bit."""
    changed = torch.randint(0, levels, x.shape, generator=g).float().to(x.device)
    late = torch.arange(x.shape[1], device=x.device)[None, :] >= t[:, None]
    other = torch.where(late, changed, x)
    with torch.no_grad():
        a, b = _forward(model, x, name, levels), _forward(model, other, name, levels)
    early = ~late | (torch.arange(x.shape[1], device=x.device)[None, :] == t[:, None])
    moved = (a != b).any(dim=2) & early
    if bool(moved.any()):
        i, u = (int(v) for v in torch.nonzero(moved)[0])
        raise NotAutoregressiveError(
            f"{name} is not autoregressive: output {u} changed when inputs from {int(t[i])} on changed; output t "
            "may read inputs < t only"
        )
