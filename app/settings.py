"""Configuration: every setting, its default and why, settable by environment variable (PARAFEED_<NAME>).

PARAFEED_REDIS_URL=redis://localhost:6379/0 PARAFEED_MAX_BATCH_ROWS=256 parafeed serve

The CLI's flags override the environment for the command they are given to. One name per setting: the old
PARAFEED_CHECKPOINTS still sets ``registry`` (PARAFEED_REGISTRY), with a deprecation warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from app.transport import HttpLimits
    from samplers.engine import Engine
    from samplers.family import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARAFEED_", env_file=None, extra="ignore")

    # Where and how to run.
    host: str = "127.0.0.1"  # loopback by default: exposing the port is a deliberate choice
    port: int = 8000
    device: str = "auto"  # auto: CUDA if available, else CPU
    # torch's threads in this process. None: the cores this process may use, divided among the worker processes
    # on the host (more OpenMP threads than cores make every solve slower: 2 workers x 2 threads on 2 cores ran
    # at a third of the speed of 2 x 1).
    threads: int | None = Field(default=None, ge=1)
    workers_per_host: int = Field(default=1, ge=1)  # `parafeed worker` processes sharing this host's cores
    registry: str | None = None  # checkpoint directory (manifest.json + safetensors); None: the shipped ones
    # Plugin models to serve besides the installed ones (entry points "parafeed.models"): "package.module:NAME",
    # comma-separated (samplers.plugins).
    plugins: Annotated[list[str], NoDecode] = []
    data: str | None = None  # Fashion-MNIST IDX directory (test-set inputs); None: Debian's dataset-fashion-mnist
    redis_url: str | None = None  # None: embedded mode (in-process queue and worker)
    stream_prefix: str = "parafeed"  # Redis key prefix: several deployments can share one Redis

    # Limits: bad or huge input never crashes the server or starves other requests.
    # Larger bodies get 413 before they are parsed. The largest a request within the other limits needs is about
    # 2.5 MB (64 sequences of 784 numbers, targets too); parsing 4 MB holds the interpreter for ~0.1 s.
    max_body_bytes: int = 4 * 2**20
    # HTTP transport (app.transport): a request line and headers beyond these get 431; too slow, 408 and close.
    http_header_bytes: int = Field(default=16 * 1024, ge=1024)
    http_headers: int = Field(default=100, ge=8)
    http_header_timeout_s: float = Field(default=10.0, gt=0.0)  # to send a request's headers (slowloris)
    http_body_timeout_s: float = Field(default=60.0, gt=0.0)  # to send its body (the request's deadline too)
    max_connections: int = Field(default=256, ge=1)  # open connections and requests in flight; beyond: 503
    keep_alive_s: int = Field(default=5, ge=1)  # an idle keep-alive connection is closed after this
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
    # Longest run of solver iterations in one worker turn: deadlines, shutdown and heartbeats are looked at at
    # least this often (one iteration of a small batch takes about a millisecond).
    turn_ms: float = Field(default=10.0, gt=0.0)
    expiry_check_ms: float = Field(default=10.0, gt=0.0)  # how often jobs past their deadline or abandoned are dropped
    # Fair shares: every busy lane (the rows of one model and step; the sliced jobs of one task and model) gets
    # this much worker time per round (deficit round robin), whatever its steps cost. 50 ms lets a light request
    # (tens of ms of solving) finish in its first turn: light p99 110 ms beside four heavy clients, 230 ms at 20.
    quantum_ms: float = Field(default=50.0, gt=0.0)
    # Inference and gradient jobs run in slices of about this long: a deadline, a departed caller or a waiting
    # request is noticed within one slice.
    slice_ms: float = Field(default=25.0, gt=0.0)

    # Bounded cost: sized for a 4 GB container (about 0.8 GB is the process with its models loaded).
    max_request_memory_mb: int = Field(default=1024, ge=1)  # one request's estimated peak; beyond it: 422
    max_request_gflop: float = Field(default=1000.0, gt=0.0)  # one request's estimated worst-case arithmetic
    worker_memory_mb: int = Field(default=1536, ge=1)  # sliced jobs held at once; beyond it, jobs wait their turn

    # Redis mode: delivery guarantees.
    # A job whose worker renewed no lease for this long is reclaimed, with every other job of that worker at once.
    # Leases are renewed every heartbeat, so a few missed heartbeats are enough to call a worker dead.
    claim_idle_ms: int = 5_000
    max_deliveries: int = 3  # after this many attempts a job goes to the dead-letter stream (caller gets 500)
    heartbeat_s: float = 1.0  # workers announce themselves this often
    heartbeat_ttl_s: float = 5.0  # and count as alive this long after
    # A worker loop silent this long (no turn finished) stops renewing leases, so its jobs get reclaimed. Longer
    # than any one job may run (max_request_timeout_s), so a slow but live job is never taken away.
    worker_stall_s: float = 660.0
    result_ttl_s: int = 600  # undelivered results expire after this
    read_block_ms: int = 250  # a worker's reader blocks this long on the stream: how soon it notices shutdown
    cancel_poll_ms: int = 100  # how often a worker asks Redis whether the callers of its jobs went away
    drain_attempts: int = 5  # delivery tries per result once a worker is shutting down (about 3 s of backoff)

    # Operations.
    # Unset: no authentication. Else every route but /healthz and /readyz needs one of them, in X-API-Key or
    # Authorization: Bearer. Env: comma-separated or a JSON list; an empty key (or a set but empty list) is refused.
    api_keys: Annotated[list[str], NoDecode] = []
    metrics_token: str | None = Field(default=None, min_length=16)  # lets a scraper read /metrics (and nothing else)
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

    def engine(self) -> Engine:
        """The engine these settings describe (device, registry, plugins, data)."""
        from samplers.engine import Engine

        return Engine(self.device, self.registry, self.plugins, self.data)

    @property
    def torch_threads(self) -> int:
        """The ``threads`` setting, or the available cores (affinity, cgroup quota) over ``workers_per_host``."""
        return self.threads or max(1, available_cores() // self.workers_per_host)

    @property
    def http_limits(self) -> HttpLimits:
        from app.transport import HttpLimits

        return HttpLimits(self.http_header_bytes, self.http_headers, self.http_header_timeout_s,
                          self.http_body_timeout_s)  # fmt: skip

    @property
    def limits(self) -> Limits:
        """The per-request bounds the families check requests against."""
        from samplers.family import Limits

        return Limits(self.max_samples, self.max_batch_rows, self.max_batch_inputs,
                      self.max_request_memory_mb * 2**20, self.max_request_gflop * 1e9)  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def deprecated_names(cls, values: Any) -> Any:
        """PARAFEED_CHECKPOINTS (the old name of PARAFEED_REGISTRY) still works, with a warning."""
        old = os.environ.get("PARAFEED_CHECKPOINTS")
        if old and isinstance(values, dict) and values.get("registry") is None:
            message = "PARAFEED_CHECKPOINTS is deprecated: set PARAFEED_REGISTRY (the same checkpoint directory)"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            logging.getLogger("parafeed").warning(message)
            values = {**values, "registry": old}
        return values

    @field_validator("api_keys", "plugins", mode="before")
    @classmethod
    def list_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """PARAFEED_API_KEYS=key1,key2 (or a JSON list) -> ["key1", "key2"]; the same for PARAFEED_PLUGINS. A key
        setting that is given but holds no key (``""``, ``" , "``, ``[]``) is refused: it would open the server."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else [item.strip() for item in text.split(",")]
        if info.field_name == "plugins":
            return [item for item in items if item]
        if not items or not any(str(item).strip() for item in items):
            raise ValueError("PARAFEED_API_KEYS is set but holds no key; unset it to run without authentication")
        return items

    @field_validator("api_keys")
    @classmethod
    def keys_fail_closed(cls, keys: list[str]) -> list[str]:
        """An empty key would let requests without a key in: refused."""
        if any(not key.strip() for key in keys):
            raise ValueError("an API key is empty; every key must be non-empty")
        return keys

    @model_validator(mode="after")
    def samples_fit_a_batch(self) -> Settings:
        if self.max_samples > self.max_batch_rows:
            raise ValueError(f"max_samples ({self.max_samples}) must not exceed max_batch_rows ({self.max_batch_rows})")
        return self


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    return cores


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
