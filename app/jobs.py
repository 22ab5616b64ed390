"""Jobs and results as they travel between the API and the workers: plain JSON, never pickle.

A job carries everything needed to compute its answer again (the seed included), so a job re-run after a worker
crash gives the same answer. Results carry the HTTP status and body the API returns.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Job:
    kind: str  # "sample" | "gradient" | "infer"
    payload: dict[str, Any]  # the validated request body (seed resolved for samples)
    deadline: float  # unix time after which nobody waits for the answer
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted: float = field(default_factory=time.time)
    request_id: str = ""

    @property
    def expired(self) -> bool:
        return time.time() > self.deadline

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        return cls(**json.loads(raw))


@dataclass
class Result:
    job_id: str
    status: int  # HTTP status the API answers with
    body: dict[str, Any]  # the response body, or {"detail": ...}

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Result:
        return cls(**json.loads(raw))

    @classmethod
    def error(cls, job_id: str, status: int, detail: str) -> Result:
        return cls(job_id, status, {"detail": detail})
