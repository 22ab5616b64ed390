"""The sampling task (POST /sample) for every sampler family: a request -> rows -> the response.

``SamplerFamily`` is the base of the families whose models are autoregressive samplers (MADE, PixelCNN++, a
plugin's model). They differ only in their sampling system (``samplers.system``: the step, the noise, the
decoder); the task is the same: draw each sample's noise from (model, seed, i), solve the rows by the requested
method (the server batches them with other requests' rows), and with ``verify`` also solve the same noise by the
sequential method, in the same batch, and report bitwise equality per sample. The library's ``sample`` and the
CLI's ``parafeed sample --json`` go through the same ``start`` and ``respond`` as the server.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch

from models.pictures import png_bytes
from models.registry import Entry
from samplers.certify import FIXED_POINT, NOT_CONVERGED, SEQUENTIAL, certificate_exactness, certificate_rows
from samplers.family import Cost, Family, Limits, ModelInfo, Offer
from samplers.inputs import InputError
from samplers.requests import SampleRequest, SampleResponse
from samplers.system import Evaluate, Plan, Propose, SamplingSystem
from samplers.work import Check, Context, Pieces, Respond, RowSet, RowWork, SliceWork, Solved, Work, bitwise_equal
from solvers import FixedPointBatch, Schedule

if TYPE_CHECKING:
    from samplers.engine import Engine

SAMPLING_FALLBACK = "jacobi"  # auto without a measurement: exact, and never slower than sequential by more than
# its confirming pass


PLAIN = ("sequential", "jacobi", "jacobi_gs", "gs_jacobi")  # what every sampling system offers
NAIVE = "sequential_naive"  # a family whose "sequential" is a fast path keeps its reference sampler under this name
WINDOW = "jacobi_window"  # windowed cached Jacobi on a fast path's layout (block_size: the window)
FAST = (*PLAIN, NAIVE, WINDOW)  # a family with a work-optimal sequential sampler and a windowed Jacobi


def fast_plan(method: str, evaluate: Evaluate, sequential: Propose, window: Propose) -> Plan | None:
    """How a FAST family runs the methods PLAIN does not cover the plain way (None for the others): ``sequential``
    and ``jacobi_window`` are fast paths whose candidates the reference map ``evaluate`` certifies, and
    ``sequential_naive`` is the reference sampler on that map."""
    if method == "sequential":
        return Plan("jacobi", evaluate, "evaluate", propose=sequential)
    if method == NAIVE:
        return Plan("sequential", evaluate, "evaluate")
    if method == WINDOW:
        return Plan("jacobi", evaluate, "evaluate", propose=window)
    return None


def sampling_offer(methods: tuple[str, ...], auto_key: str) -> dict[str, Offer]:
    return {"sample": Offer(methods, auto_key=auto_key, fallback=SAMPLING_FALLBACK)}


class SamplerFamily(Family):
    """A family of autoregressive samplers. Subclasses set ``name`` and ``offers`` and build the system."""

    kind = "sampler"

    def check(self, task: str, request: Any, info: ModelInfo, limits: Limits) -> None:
        check_sample(request, info, limits)

    def cost(self, task: str, request: Any, entry: Entry, method: str) -> Cost:
        """Samplers are admitted by rows (``max_samples``, ``max_batch_rows``), not by cost: each row holds its
        iterate, its image and its noise (a few dozen bytes a position); its arithmetic is what its lane costs."""
        rows = request.num_samples * (2 if request.verify else 1)
        return Cost(rows * self.describe(entry)[1] * 64, 0.0, "num_samples")

    def start(self, task: str, engine: Engine, request: Any, method: str, block_size: int | None) -> Work:
        return start_sample(engine.system(request.model), request, method, block_size, engine.device.type)


def check_sample(request: SampleRequest, info: ModelInfo, limits: Limits) -> None:
    """What a sampling request must satisfy beyond its schema (raises InputError naming the field)."""
    if request.method not in info.tasks["sample"]:
        offered = ", ".join(info.tasks["sample"])
        raise InputError("method", f"{request.model} offers {offered}; got {request.method!r}")
    if request.num_samples > limits.max_samples:
        raise InputError("num_samples", f"at most {limits.max_samples} per request on this server")
    if request.verify and 2 * request.num_samples > limits.max_batch_rows:  # each sample brings a reference row
        raise InputError("num_samples", f"at most {limits.max_batch_rows // 2} with verify on this server")
    if request.block_size is not None and request.block_size > info.sequential_steps:
        raise InputError("block_size", f"at most {info.sequential_steps} (the number of unknowns)")


def plan_for(system: SamplingSystem, method: str) -> Plan:
    """How ``system`` runs a sampler method (InputError naming the field if it does not offer it)."""
    if method not in system.methods:
        raise InputError("method", f"{system.name} offers {', '.join(system.methods)}, auto; got {method!r}")
    return system.plan(method)


def rows_for(system: SamplingSystem, method: str, noise: torch.Tensor, block_size: int | None = None,
             max_iterations: int | None = None) -> RowSet:  # fmt: skip
    """The rows that sample ``noise`` (N, ...) by a sampler method."""
    plan = plan_for(system, method)
    schedule = Schedule(plan.solver_method, block_size or system.block_size, max_iterations=max_iterations)
    return RowSet((system.name, plan.variant), system, plan, noise, schedule)


def start_sample(
    system: SamplingSystem, request: SampleRequest, method: str, block_size: int | None, device: str
) -> Work:
    """The work that answers a sampling request: the method's rows (or its fast path's candidate, then the
    certificate rows that make it exact), then, with verify, the answer certified (``samplers.certify``)."""
    assert request.seed is not None  # fixed when the request was validated
    noise = system.draw_noise(request.seed, range(request.num_samples))
    plan = plan_for(system, method)
    if plan.propose is not None:
        return SliceWork(propose_pieces(system, request, method, noise, plan, block_size or request.block_size))
    rows = rows_for(system, method, noise, block_size or request.block_size, request.max_iterations)
    exactness = SEQUENTIAL if rows.plan.solver_method == "sequential" else FIXED_POINT

    def solved(parts: list[Solved], context: Context) -> SampleResponse | RowWork:
        answer = parts[0]
        label = exactness if all(answer.converged) else NOT_CONVERGED
        if not request.verify:
            return respond_sample(system, request, method, answer, answer.iterations, label, 0, None, context)
        return verify_work(system, request, method, noise, answer, label)

    return RowWork([rows], solved, lambda parts: checks_of(system, request, method, noise, parts[0]))


def propose_pieces(
    system: SamplingSystem, request: SampleRequest, method: str, noise: torch.Tensor, plan: Plan,
    block_size: int | None,
) -> Pieces[Respond]:  # fmt: skip
    """A fast path: the candidate in pieces, then certificate rows (Jacobi on F from the candidate)."""
    assert plan.propose is not None
    candidate, depth = yield from plan.propose(noise, block_size)

    def certify(context: Context) -> RowWork:
        def respond(parts: list[Solved], context: Context) -> SampleResponse:
            cert = parts[0]
            label, repaired = certificate_exactness(cert)
            iterations = [d + it for d, it in zip(depth, cert.iterations, strict=True)]
            verified = cert.converged if request.verify else None  # certified (or repaired) = the sequential sample
            return respond_sample(system, request, method, cert, iterations, label, repaired, verified, context)

        return RowWork([certificate_rows(system, noise, candidate)], respond,
                       lambda parts: checks_of(system, request, method, noise, parts[0]))  # fmt: skip

    return certify


def verify_work(
    system: SamplingSystem, request: SampleRequest, method: str, noise: torch.Tensor, answer: Solved, label: str
) -> RowWork:
    """``verify``: the answer certified by one evaluation of F (what it converged to, if it had not)."""

    def respond(parts: list[Solved], context: Context) -> SampleResponse:
        verified = bitwise_equal(answer.x, parts[0].x)
        return respond_sample(system, request, method, answer, answer.iterations, label, 0, verified, context)

    return RowWork([certificate_rows(system, noise, answer.x)], respond)


def respond_sample(
    system: SamplingSystem, request: SampleRequest, method: str, answer: Solved, iterations: list[int],
    exactness: str, repaired: int, verified: list[bool] | None, context: Context,
) -> SampleResponse:  # fmt: skip
    samples = system.decode(answer.x)
    return SampleResponse.model_construct(  # built from validated parts: no second validation of samples
        model=request.model, method=method, seed=request.seed, shape=[int(samples.shape[0]), *system.image_shape],
        samples=encode_samples(samples, request.format, system.levels), iterations=iterations,
        sequential_steps=system.unknowns, converged=all(answer.converged),
        verified=None if verified is None else all(verified), verified_per_sample=verified,
        exactness=exactness, repaired=repaired, device=context.device, timings_ms=context.timings(),
    )  # fmt: skip


def checks_of(
    system: SamplingSystem, request: SampleRequest, method: str, noise: torch.Tensor, answer: Solved
) -> list[Check]:
    """Continuous verification: each answered sample certified again, alone (one evaluation of F)."""
    label = {"model": request.model, "seed": request.seed, "method": method}
    return [Check(certificate_rows(system, noise[i : i + 1], answer.x[i : i + 1]), answer.x[i], {**label, "sample": i})
            for i in range(request.num_samples) if answer.converged[i]]  # fmt: skip


def encode_samples(samples: torch.Tensor, output_format: str, levels: int) -> list[Any]:
    """(N, C, H, W) integer levels -> nested lists of ints, or base64 PNG strings (levels scaled to 0..255)."""
    if output_format == "png":
        images = torch.round(samples.double() * (255 / (levels - 1))) if levels != 256 else samples
        return [base64.b64encode(png_bytes(img.to(torch.uint8), scale=1)).decode() for img in images.cpu()]
    return samples.cpu().tolist()


def sample(
    engine: Engine, model: str, num_samples: int = 4, method: str = "auto", seed: int | None = None,
    block_size: int | None = None, max_iterations: int | None = None, verify: bool = False,
    output_format: Literal["array", "png"] = "array", callback: Callable[[FixedPointBatch], None] | None = None,
) -> SampleResponse:  # fmt: skip
    """Samples from a registered model, solved in this thread: the library's (and the CLI's) POST /sample.
    ``callback`` sees the solver state after every evaluation (progress bars)."""
    request = SampleRequest(model=model, num_samples=num_samples, method=method, seed=seed, block_size=block_size,
                            max_iterations=max_iterations, verify=verify, format=output_format)  # fmt: skip
    response = engine.run("sample", request, callback=callback)
    assert isinstance(response, SampleResponse)
    return response
