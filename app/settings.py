"""Service configuration: every knob, its default and why, settable by environment variable (PARAFEED_*).

PARAFEED_REDIS_URL=redis://localhost:6379/0 PARAFEED_MAX_BATCH_ROWS=256 parafeed serve
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARAFEED_", env_file=None, extra="ignore")

    # Where and how to run.
    host: str = "127.0.0.1"  # loopback by default: exposing the port is a deliberate choice
    port: int = 8000
    device: str = "auto"  # auto: CUDA if available, else CPU
    registry: str | None = None  # checkpoint directory; None: PARAFEED_CHECKPOINTS, then the shipped ones
    redis_url: str | None = None  # None: embedded mode (in-process queue and worker)
    stream_prefix: str = "parafeed"  # Redis key prefix: several deployments can share one Redis

    # Limits: bad or huge input never crashes the server or starves other requests.
    max_body_bytes: int = 8 * 2**20  # larger bodies get 413 before they are parsed
    max_samples: int = 64  # per /sample request
    max_batch_inputs: int = 64  # inputs per /gradient or /infer request
    max_queue: int = 1024  # jobs waiting or running; beyond it, 503 with Retry-After
    retry_after_s: int = 1
    request_timeout_s: float = 60.0  # default deadline; X-Request-Timeout (seconds) may shorten it -> 504
    max_request_timeout_s: float = 600.0

    # Batching in the worker (iteration-level: rows join and leave between solver iterations).
    max_batch_rows: int = 128  # rows (samples) advanced together per model per iteration
    batching: str = Field(default="iteration", pattern="^(iteration|static)$")  # static: batch-synchronous (baseline)
    # An idle worker that got a job waits this long for more before its first iteration. None: 0 under iteration
    # batching (a job that arrives later joins at the next iteration, so waiting would only delay the first one),
    # 2 ms under static batching (a batch that is sealed once it starts had better start full).
    max_wait_ms: float | None = Field(default=None, ge=0.0, le=1000.0)

    # Redis mode: delivery guarantees.
    claim_idle_ms: int = 30_000  # a job whose worker renewed no lease for this long is reclaimed (keep >> heartbeat)
    max_deliveries: int = 3  # after this many attempts a job goes to the dead-letter stream (caller gets 500)
    heartbeat_s: float = 1.0  # workers announce themselves this often
    heartbeat_ttl_s: float = 5.0  # and count as alive this long after
    # A worker loop silent this long (no turn finished) stops renewing leases, so its jobs get reclaimed. Longer
    # than any one job may run (max_request_timeout_s), so a slow but live job is never taken away.
    worker_stall_s: float = 660.0
    result_ttl_s: int = 600  # undelivered results expire after this

    # Operations.
    # Empty: no authentication; else X-API-Key or Authorization: Bearer. Env: comma-separated or a JSON list.
    api_keys: Annotated[list[str], NoDecode] = []
    verify_fraction: float = Field(default=0.0, ge=0.0, le=1.0)  # answered requests re-checked in the background
    verify_queue: int = 1024  # samples waiting for a background check beyond this are dropped (and counted)
    verify_rows: int = 8  # batch rows background checks may hold at once: verification never crowds out requests
    metrics_host: str = "127.0.0.1"  # where `parafeed worker --metrics-port` listens (0.0.0.0 in containers)
    drain_timeout_s: float = 30.0  # on SIGTERM, time to finish rows in flight before handing them back
    log_json: bool = True  # one JSON object per log line

    @property
    def batch_wait_s(self) -> float:
        """The effective ``max_wait_ms``, in seconds."""
        if self.max_wait_ms is not None:
            return self.max_wait_ms / 1000
        return 0.002 if self.batching == "static" else 0.0

    @field_validator("api_keys", mode="before")
    @classmethod
    def keys_from_text(cls, value: Any) -> Any:
        """PARAFEED_API_KEYS=key1,key2 (or a JSON list) -> ["key1", "key2"]."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [key.strip() for key in text.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def samples_fit_a_batch(self) -> Settings:
        if self.max_samples > self.max_batch_rows:
            raise ValueError(f"max_samples ({self.max_samples}) must not exceed max_batch_rows ({self.max_batch_rows})")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
