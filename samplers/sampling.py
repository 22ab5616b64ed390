"""``sample``: a request for samples -> solved systems -> the JSON body of POST /sample (DESIGN.md section 4).

The CLI's ``parafeed sample --json`` prints exactly this body. Sample i of a request is a pure function of
(model, seed, i), the same for every method; ``verify`` re-solves with the sequential method and the same noise
and reports bitwise equality per sample.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import torch

from models.pictures import png_bytes
from samplers.auto import pick_method
from samplers.engine import Engine
from samplers.noise import random_seed
from samplers.system import SamplingSystem, solve_system


def encode_samples(samples: torch.Tensor, output_format: str, binary: bool) -> list[Any]:
    """(N, C, H, W) integer images -> nested lists of ints, or base64 PNG strings (binary images as 0/255)."""
    if output_format == "png":
        images = samples * 255 if binary else samples
        return [base64.b64encode(png_bytes(img.to(torch.uint8), scale=1)).decode() for img in images.cpu()]
    return samples.cpu().tolist()


def run_sampling(
    system: SamplingSystem,
    noise: torch.Tensor,
    method: str,
    block_size: int | None,
    max_iterations: int | None,
    verify: bool,
) -> dict[str, Any]:
    """Solve and (optionally) verify; returns samples, iterations, convergence and timings, no encoding."""
    start = time.perf_counter()
    with torch.inference_mode():
        solved = solve_system(system, noise, method, block_size, max_iterations)
        if noise.device.type == "cuda":
            torch.cuda.synchronize()
        compute = time.perf_counter() - start
        per_sample: list[bool] | None = None
        if verify:
            reference = solved if method == "sequential" else solve_system(system, noise, "sequential")
            per_sample = (solved.samples == reference.samples).flatten(1).all(dim=1).tolist()
    return {
        "samples": solved.samples,
        "iterations": solved.result.iterations.tolist(),
        "converged": bool(solved.result.converged.all()),
        "verified_per_sample": per_sample,
        "compute_ms": compute * 1000,
    }


def sample(
    engine: Engine,
    model: str,
    num_samples: int = 4,
    method: str = "auto",
    seed: int | None = None,
    block_size: int | None = None,
    max_iterations: int | None = None,
    verify: bool = False,
    output_format: str = "array",
) -> dict[str, Any]:
    system = engine.sampling_system(model)
    seed = random_seed() if seed is None else seed
    used = pick_method(engine.info(model).family, engine.device.type) if method == "auto" else method
    noise = system.draw_noise(seed, range(num_samples))
    out = run_sampling(system, noise, used, block_size, max_iterations, verify)
    per_sample = out["verified_per_sample"]
    return {
        "model": model,
        "method": used,
        "seed": seed,
        "shape": [num_samples, *system.image_shape],
        "samples": encode_samples(out["samples"], output_format, binary=system.dtype != torch.long),
        "iterations": out["iterations"],
        "sequential_steps": system.unknowns,
        "converged": out["converged"],
        "verified": None if per_sample is None else all(per_sample),
        "verified_per_sample": per_sample,
        "device": engine.device.type,
        "timings_ms": {"queue": 0.0, "compute": round(out["compute_ms"], 3)},
    }
