"""The request and response bodies of every task (POST /sample, /infer, /gradient), typed and described.

These models are the HTTP API v1: the routes validate bodies with them, OpenAPI documents them, the worker
reads queued jobs back with them, the library and the CLI return them (``--json`` prints exactly the HTTP body).
Unknown fields are rejected. A request's ``method`` is checked against the registry of families
(``samplers.families``), so methods added by a family, or by a plugin, need no edit here; whether *this* model
offers the method is checked by its family.

Sample i of a sampling request is a pure function of (model, seed, i), so ``seed`` is fixed here, once: a request
without one gets a random seed at validation, which the response echoes and a re-run after a crash reuses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from samplers.noise import MAX_SEED, random_seed

LIMIT = 100_000  # generous outer bound of counts; the server's settings bound them further


def _method_field(task: str, default: str = "auto") -> Any:
    def listed(schema: dict[str, Any]) -> None:  # evaluated when OpenAPI is generated: plugins included
        from samplers.families import task_methods

        schema["enum"] = [*task_methods(task), "auto"]

    description = (f"how to solve: one of the model's methods for /{task} (GET /models), or `auto`: the fastest "
                   "exact method measured for this model and device")  # fmt: skip
    return Field(default, description=description, json_schema_extra=listed)


def _check_method(task: str, value: str) -> str:
    from samplers.families import task_methods

    known = (*task_methods(task), "auto")
    if value not in known:
        raise ValueError(f"method must be one of {', '.join(known)}; got {value!r}")
    return value


class TaskRequest(BaseModel):
    """A request of one task: unknown fields rejected, types strict (``true`` is not a count, ``"1"`` not a
    number), ``method`` one that some family offers for the task."""

    model_config = ConfigDict(extra="forbid", strict=True)
    task: ClassVar[str]
    model: str = Field(min_length=1, max_length=100, description="a model's name (GET /models)")

    @field_validator("method", check_fields=False)
    @classmethod
    def offered(cls, value: str) -> str:
        return _check_method(cls.task, value)


class DrawnInputs(TaskRequest):
    """Inputs given, or drawn from the test set."""

    batch: int = Field(4, ge=1, le=1024, description="test-set inputs to draw when `inputs` is not given")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="picks the test-set inputs")


class Timings(BaseModel):
    queue: float = Field(description="milliseconds from submission until a worker started the job")
    compute: float = Field(description="milliseconds the worker spent on it")


# -- /sample ------------------------------------------------------------------------------------------------------
class SampleRequest(TaskRequest):
    task = "sample"
    model: str = Field(min_length=1, max_length=100, description="a sampler's name (GET /models)")
    num_samples: int = Field(4, ge=1, le=1024, description="samples to draw (the server may allow fewer)")
    method: str = _method_field("sample")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="sample i is a pure function of (model, seed, i); "
                             "default: random, echoed in the response")  # fmt: skip
    block_size: int | None = Field(None, ge=1, le=LIMIT, description="jacobi_gs block / gs_jacobi window, in "
                                   "unknowns (default: one image row, or what `auto` measured)")  # fmt: skip
    max_iterations: int | None = Field(None, ge=1, le=LIMIT, description="cap on evaluations per sample; "
                                       "below the number of unknowns the answer may say converged: false")  # fmt: skip
    verify: bool = Field(False, description="also solve sequentially with the same noise and compare bit for bit")
    format: Literal["array", "png"] = Field("array", description="array: nested integer levels; png: base64 images")

    @model_validator(mode="after")
    def fix_seed(self) -> SampleRequest:
        if self.seed is None:
            self.seed = random_seed()
        return self


class SampleResponse(BaseModel):
    model: str
    method: str = Field(description="the method used (`auto` resolved)")
    seed: int
    shape: list[int] = Field(description="(N, C, H, W)")
    samples: list[Any] = Field(description="(N, C, H, W) integer levels, or N base64 PNG images")
    iterations: list[int] = Field(description="per sample: step evaluations, the confirming one included")
    sequential_steps: int = Field(description="evaluations of the ordinary sequential sampler")
    converged: bool = Field(description="every sample certified (false only under max_iterations)")
    verified: bool | None = Field(description="with verify: all samples bitwise equal to the sequential sampler's "
                                  "(certified: one evaluation of the reference map reproduced them)")  # fmt: skip
    verified_per_sample: list[bool] | None = Field(description="with verify: the comparison per sample")
    exactness: str = Field("fixed point", description="how exactness was established: `sequential` (the reference "
                           "sampler, bitwise by construction), `fixed point` (a solver iterated the reference map to "
                           "F(x) = x), `certified` (a fast path's candidate, reproduced by one evaluation of the "
                           "reference map), `repaired` (some candidates were not, and were finished by Jacobi on the "
                           "reference map), `not converged` (stopped by max_iterations)")  # fmt: skip
    repaired: int = Field(0, description="samples whose fast-path candidate failed the certificate (then repaired)")
    device: str
    timings_ms: Timings


# -- /infer and /gradient -----------------------------------------------------------------------------------------
_INPUTS = "(B, T) sequences in [0, 1]"
Sequence = Annotated[list[float], Field(max_length=100_000)]
_IMAGES = "classifier: (B, H, W) or (B, C, H, W) images in [-1, 1]; sequence model: " + _INPUTS


class InferRequest(DrawnInputs):
    task = "infer"
    model: str = Field(min_length=1, max_length=100, description="a classifier's or sequence model's name")
    inputs: list[Any] | None = Field(None, max_length=1024,
                                     description=f"{_IMAGES}; default: `batch` test-set inputs by `seed`")  # fmt: skip
    method: str = _method_field("infer")
    tol: float = Field(0.0, ge=0.0, le=1e6, allow_inf_nan=False,
                       description="0: exact; > 0: stop when iterates agree within tol")  # fmt: skip
    max_iterations: int | None = Field(None, ge=1, le=LIMIT, description="cap on iterations (exact: false below "
                                       "the number of unknowns)")  # fmt: skip
    verify: bool = Field(False, description="also run the sequential forward and report the difference")


class InferVerified(BaseModel):
    max_abs_diff: float
    equal: bool = Field(description="bitwise equal to the sequential forward")


class ComputedResponse(BaseModel):
    """What /infer and /gradient answers share: how it was solved, and how exact the answer is."""

    model: str
    method: str = Field(description="the method used (`auto` resolved)")
    sequential_steps: int = Field(description="dependent steps of the ordinary sequential computation")
    exact: bool = Field(description="the sequential answer (to rounding where sums were reassociated)")
    residual: float = Field(description="max |F(x) - x| of the returned solution (0 when certified)")
    timings_ms: Timings


class InferResponse(ComputedResponse):
    outputs: list[Any] = Field(description="(B, classes) logits, or (B, T) next-pixel predictions")
    predictions: list[Any] = Field(description="predicted classes, or the next-pixel predictions")
    iterations: list[int] = Field(description="per input: solver iterations (the depth for `sequential`)")
    converged: bool
    verified: InferVerified | None


class GradientRequest(DrawnInputs):
    task = "gradient"
    model: str = Field(min_length=1, max_length=100, description="a sequence model's name")
    inputs: list[Sequence] | None = Field(None, max_length=1024,
                                          description=f"{_INPUTS}; default: `batch` test-set sequences")  # fmt: skip
    targets: list[Sequence] | None = Field(None, max_length=1024, description="(B, T) regression targets; default: "
                                           "the inputs (next-pixel regression)")  # fmt: skip
    method: str = _method_field("gradient")
    wrt: Literal["params", "inputs"] = Field("params", description="gradient of the mean loss w.r.t. every named "
                                             "parameter, or w.r.t. the inputs")  # fmt: skip
    max_iterations: int | None = Field(None, ge=1, le=LIMIT, description="jacobi: n iterations = n-step truncated "
                                       "BPTT (exact: false below T)")  # fmt: skip
    verify: bool = Field(False, description="also run ordinary BPTT (autograd) and report the difference")


class TensorOut(BaseModel):
    shape: list[int]
    data: list[float] = Field(description="the values, flattened in row-major order")


class GradientVerified(BaseModel):
    max_abs_diff: float = Field(description="max |gradient - autograd's| over every entry")


class GradientResponse(ComputedResponse):
    loss: float
    gradients: dict[str, TensorOut]
    iterations: int = Field(description="sequential steps: T (BPTT), Jacobi iterations, or scan levels")
    verified: GradientVerified | None


class ErrorResponse(BaseModel):
    detail: Any = Field(description="what went wrong; for 422 a list of {loc, msg, type} naming the field")


REQUESTS: dict[str, type[BaseModel]] = {"sample": SampleRequest, "infer": InferRequest, "gradient": GradientRequest}
RESPONSES: dict[str, type[BaseModel]] = {"sample": SampleResponse, "infer": InferResponse,
                                         "gradient": GradientResponse}  # fmt: skip
