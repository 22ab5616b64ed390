"""What the server refuses before any work: requests without a key, keys that would open it, loose types, and
requests over the cost budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.test_api import client_for


@pytest.fixture(scope="module")
def client(server_registry: Path):  # type: ignore[no-untyped-def]
    with client_for(server_registry) as c:
        yield c


def test_keys_protect_every_route_but_the_probes(server_registry: Path) -> None:
    token = "scraper-token-0123456789"
    with client_for(server_registry, api_keys=["s3cret"], metrics_token=token) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/metrics", "/models"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
        assert c.get("/readyz").status_code == 200
        assert c.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401  # metrics only
        assert c.get("/models", headers={"X-API-Key": ""}).status_code == 401


@pytest.mark.parametrize("keys", ["", " , ", "[]", '["", "key1"]', "key1,,key2"])
def test_keys_that_would_open_the_server_are_refused_at_start(keys: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("PARAFEED_API_KEYS", keys)
    with pytest.raises(ValidationError, match=r"(?i)api.key"):
        Settings()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "made-tiny", "num_samples": True}, "num_samples"),
        ({"model": "made-tiny", "num_samples": "1"}, "num_samples"),
        ({"model": "made-tiny", "verify": "yes"}, "verify"),
        ({"model": "made-tiny", "seed": 1.5}, "seed"),
    ],
)
def test_types_are_strict(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/sample", json=body)
    assert r.status_code == 422
    assert any(field in e["loc"] for e in r.json()["detail"]), r.json()


def test_a_nan_tolerance_is_named_as_not_finite(client: TestClient) -> None:
    r = client.post(
        "/infer", content=b'{"model": "densenet-tiny", "tol": NaN}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "finite" in r.json()["detail"][0]["msg"]


def test_requests_over_the_cost_budget_say_the_limit(server_registry: Path) -> None:
    with client_for(server_registry, max_request_memory_mb=1) as c:
        r = c.post("/gradient", json={"model": "gru-tiny", "batch": 64, "method": "scan"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "batch"]
        assert "1 MiB per request" in r.json()["detail"][0]["msg"]
    with client_for(server_registry, max_request_gflop=1e-6) as c:
        r = c.post("/infer", json={"model": "densenet-tiny", "inputs": [[[0.0] * 28] * 28], "method": "jacobi"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "inputs"]
        assert "GFLOP per request" in r.json()["detail"][0]["msg"]
