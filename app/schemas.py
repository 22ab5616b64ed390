"""Request and response bodies of the HTTP API v1 (DESIGN.md section 4). Unknown fields are rejected (422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRequest(Strict):
    model: str = Field(min_length=1, max_length=100)
    num_samples: int = Field(4, ge=1, le=1024)  # the server setting max_samples bounds it further
    method: Literal["sequential", "jacobi", "jacobi_gs", "gs_jacobi", "jacobi_split", "auto"] = "auto"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    block_size: int | None = Field(None, ge=1, le=100_000)
    max_iterations: int | None = Field(None, ge=1, le=100_000)
    verify: bool = False
    format: Literal["array", "png"] = "array"


class GradientRequest(Strict):
    model: str = Field(min_length=1, max_length=100)
    inputs: list[list[float]] | None = None  # (B, T) sequences in [0, 1]; None: test-set inputs by seed
    targets: list[list[float]] | None = None  # (B, T); None: next-pixel regression on the inputs
    batch: int = Field(4, ge=1, le=1024)  # when inputs are drawn from the test set
    seed: int = Field(0, ge=0, le=MAX_SEED)
    method: Literal["sequential", "jacobi", "scan", "auto"] = "auto"
    wrt: Literal["params", "inputs"] = "params"
    max_iterations: int | None = Field(None, ge=1, le=100_000)
    verify: bool = False


class InferRequest(Strict):
    model: str = Field(min_length=1, max_length=100)
    inputs: list[Any] | None = None  # classifier: (B, 28, 28) or (B, 1, 28, 28) in [-1, 1]; sequence: (B, T)
    batch: int = Field(4, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    method: Literal["sequential", "jacobi", "auto"] = "auto"
    tol: float = Field(0.0, ge=0.0, le=1e6)
    max_iterations: int | None = Field(None, ge=1, le=100_000)
    verify: bool = False


class ModelOut(BaseModel):
    name: str
    kind: str
    shape: list[int]
    sequential_steps: int
    methods: list[str]
    description: str


class ErrorOut(BaseModel):
    detail: Any
