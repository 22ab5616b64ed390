"""``sample``: a request for samples -> solved systems -> the JSON body of POST /sample (DESIGN.md section 4).

Three steps, shared by the library call and the server worker (which interleaves the middle one with other
requests' rows): ``prepare`` (resolve method and seed, draw the noise), solving (``solve_system`` here; the
worker's iteration-level batch there), and ``sample_body``. Sample i of a request is a pure function of
(model, seed, i), the same for every method; ``verify`` re-solves with the sequential method and the same noise
and reports bitwise equality per sample. The CLI's ``parafeed sample --json`` prints exactly this body.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.pictures import png_bytes
from samplers.auto import SAMPLING_FALLBACK, pick_method
from samplers.engine import Engine
from samplers.noise import random_seed
from samplers.system import SamplingSystem, solve_system
from solvers import FixedPointBatch


@dataclass(frozen=True)
class PreparedSample:
    model: str
    system: SamplingSystem
    method: str  # resolved ("auto" replaced by the measured choice)
    seed: int
    noise: torch.Tensor  # (N, ...) fixed noise of samples 0..N-1
    block_size: int | None
    max_iterations: int | None
    verify: bool
    output_format: str


def resolve_method(engine: Engine, model: str, method: str) -> tuple[str, int | None]:
    """ "auto" -> (the measured fastest exact method, its block size or None); others unchanged."""
    if method != "auto":
        return method, None
    picked = pick_method(engine.info(model).family, engine.device.type, fallback=SAMPLING_FALLBACK)
    name, _, block = picked.partition(":")  # e.g. "gs_jacobi:112"
    return name, int(block) if block else None


def prepare(
    engine: Engine, model: str, num_samples: int = 4, method: str = "auto", seed: int | None = None,
    block_size: int | None = None, max_iterations: int | None = None, verify: bool = False,
    output_format: str = "array",
) -> PreparedSample:  # fmt: skip
    system = engine.sampling_system(model)
    used, auto_block = resolve_method(engine, model, method)
    if used not in system.methods:
        raise ValueError(f"method must be one of {', '.join(system.methods)}, auto for {model}; got {method!r}")
    seed = random_seed() if seed is None else seed
    noise = system.draw_noise(seed, range(num_samples))
    block = block_size or auto_block
    return PreparedSample(model, system, used, seed, noise, block, max_iterations, verify, output_format)


def encode_samples(samples: torch.Tensor, output_format: str, binary: bool) -> list[Any]:
    """(N, C, H, W) integer images -> nested lists of ints, or base64 PNG strings (binary images as 0/255)."""
    if output_format == "png":
        images = samples * 255 if binary else samples
        return [base64.b64encode(png_bytes(img.to(torch.uint8), scale=1)).decode() for img in images.cpu()]
    return samples.cpu().tolist()


def verify_samples(prepared: PreparedSample, samples: torch.Tensor) -> list[bool]:
    """Per sample: bitwise equal to the sequential sampler with the same noise?"""
    with torch.inference_mode():
        reference = solve_system(prepared.system, prepared.noise, "sequential").samples
    return (samples.cpu() == reference.cpu()).flatten(1).all(dim=1).tolist()


def sample_body(
    prepared: PreparedSample, samples: torch.Tensor, iterations: list[int], converged: bool, compute_ms: float,
    queue_ms: float = 0.0, device: str = "cpu", verified_per_sample: list[bool] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The POST /sample response. When the request asked to verify, ``verified_per_sample`` is the comparison
    with the sequential sampler (the server solves those reference rows in its batch); if it is not given, the
    sequential solve runs here first."""
    per_sample = verified_per_sample
    if prepared.verify and per_sample is None:
        per_sample = verify_samples(prepared, samples)
    system = prepared.system
    return {
        "model": prepared.model,
        "method": prepared.method,
        "seed": prepared.seed,
        "shape": [int(samples.shape[0]), *system.image_shape],
        "samples": encode_samples(samples, prepared.output_format, binary=system.dtype != torch.long),
        "iterations": iterations,
        "sequential_steps": system.unknowns,
        "converged": converged,
        "verified": None if per_sample is None else all(per_sample),
        "verified_per_sample": per_sample,
        "device": device,
        "timings_ms": {"queue": round(queue_ms, 3), "compute": round(compute_ms, 3)},
    }


def sample(engine: Engine, model: str, num_samples: int = 4, method: str = "auto", seed: int | None = None,
           block_size: int | None = None, max_iterations: int | None = None, verify: bool = False,
           output_format: str = "array",
           callback: Callable[[FixedPointBatch], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """The library (and CLI) path: prepare, solve in one go, build the body. ``callback`` sees the solver state
    after every evaluation (progress bars)."""
    p = prepare(engine, model, num_samples, method, seed, block_size, max_iterations, verify, output_format)
    start = time.perf_counter()
    with torch.inference_mode():
        solved = solve_system(p.system, p.noise, p.method, p.block_size, p.max_iterations, callback=callback)
        if p.noise.device.type == "cuda":
            torch.cuda.synchronize()
    compute = (time.perf_counter() - start) * 1000
    result = solved.result
    return sample_body(p, solved.samples, result.iterations.tolist(), result.all_converged, compute,
                       device=engine.device.type)  # fmt: skip
