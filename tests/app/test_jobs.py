"""Jobs and results cross Redis as JSON and come back equal; responses are strict JSON."""

from __future__ import annotations

import json
import math

from app.jobs import Job, Result
from app.responses import FastJSONResponse


def test_jobs_and_results_survive_the_round_trip() -> None:
    job = Job("sample", {"model": "made-fmnist", "seed": 2**63 - 1, "inputs": [[0.5, 1.0]], "verify": True},
              deadline=1.5)  # fmt: skip
    again = Job.from_json(job.to_json())
    assert again == job
    body = {"samples": [[[[0, 1], [1, 0]]]], "residual": math.inf, "verified": None}
    result = Result.from_json(Result(job.id, 200, body).to_json())
    assert (result.job_id, result.status, result.body["samples"]) == (job.id, 200, body["samples"])
    assert result.body["residual"] == math.inf  # non-finite floats travel between our own processes


def test_responses_are_compact_strict_json() -> None:
    body = {"samples": [[1, 0]], "name": "é", "residual": float("nan"), "nested": {"x": 1.5}}
    rendered = FastJSONResponse(body).body
    assert json.loads(rendered) == {**body, "residual": None}  # strict JSON has no NaN: null
    plain = {k: v for k, v in body.items() if k != "residual"}
    assert FastJSONResponse(plain).body == json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()
