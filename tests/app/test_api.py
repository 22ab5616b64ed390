"""Every endpoint of the embedded server: the happy path and each error code (docs/ARCHITECTURE.md, "Contracts")."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from samplers.engine import Engine
from samplers.sampling import sample


def client_for(registry: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(Settings(registry=str(registry), **overrides)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(server_registry: Path) -> Iterator[TestClient]:
    with client_for(server_registry, api_keys=[], max_samples=64) as c:
        yield c


def test_health_ready_docs_and_request_ids(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"models": True, "queue": True, "workers": True}
    assert client.get("/docs").status_code == 200
    assert "/sample" in client.get("/openapi.json").json()["paths"]
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_models_list(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    methods = models["made-tiny"]["methods"]
    expected = {"name": "made-tiny", "kind": "sampler", "shape": [1, 8, 8], "sequential_steps": 64, "methods": methods,
                "tasks": {"sample": methods}, "description": "tiny made"}  # fmt: skip
    assert models["made-tiny"] == expected
    assert "jacobi_split" in models["made-tiny"]["methods"]
    assert models["densenet-tiny"]["kind"] == "classifier"
    assert models["rnn-tiny"]["kind"] == "sequence"


def test_sample_equals_the_library_answer(client: TestClient, server_registry: Path) -> None:
    body = {"model": "pixelcnnpp-tiny", "num_samples": 5, "method": "jacobi", "seed": 9, "verify": True}
    r = client.post("/sample", json=body)
    assert r.status_code == 200
    answer = r.json()
    library = sample(Engine("cpu", server_registry), "pixelcnnpp-tiny", 5, "jacobi", 9)
    assert answer["samples"] == library.samples
    assert answer["iterations"] == library.iterations
    assert answer["verified"] is True
    assert answer["shape"] == [5, 1, 8, 8]
    assert set(answer["timings_ms"]) == {"queue", "compute"}


def test_sample_png_and_random_seed(client: TestClient) -> None:
    r = client.post("/sample", json={"model": "made-tiny", "num_samples": 2, "format": "png"})
    assert r.status_code == 200
    assert isinstance(r.json()["seed"], int)
    assert base64.b64decode(r.json()["samples"][0]).startswith(b"\x89PNG")


def test_gradient_and_infer(client: TestClient) -> None:
    g = client.post("/gradient", json={"model": "rnn-tiny", "batch": 2, "method": "scan", "verify": True})
    assert g.status_code == 200
    assert g.json()["verified"]["max_abs_diff"] <= 1e-5
    inputs = [[0.5] * 25, [0.1] * 25]
    g2 = client.post("/gradient", json={"model": "rnn-tiny", "inputs": inputs, "method": "jacobi", "wrt": "inputs"})
    assert g2.json()["gradients"]["inputs"]["shape"] == [2, 25]
    i = client.post("/infer", json={"model": "densenet-tiny", "batch": 3, "method": "jacobi", "verify": True})
    assert i.status_code == 200
    assert i.json()["verified"]["equal"] is True
    image = [[[0.0] * 28] * 28]
    assert client.post("/infer", json={"model": "densenet-tiny", "inputs": image}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "made-tiny", "num_samples": 0}, "num_samples"),
        ({"model": "made-tiny", "num_samples": 65}, "num_samples"),
        ({"model": "made-tiny", "seed": -1}, "seed"),
        ({"model": "made-tiny", "method": "newton"}, "method"),
        ({"model": "made-tiny", "block_size": 65}, "block_size"),
        ({"model": "made-tiny", "extra": True}, "extra"),
        ({"model": "pixelcnnpp-tiny", "method": "jacobi_split"}, "method"),
        ({"model": "densenet-tiny"}, "model"),
        ({}, "model"),
    ],
)
def test_bad_sample_requests_name_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/sample", json=body)
    assert r.status_code == 422
    assert any(field in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/gradient", {"model": "rnn-tiny", "inputs": [[0.5] * 24]}, "inputs"),
        ("/gradient", {"model": "rnn-tiny", "inputs": [[2.0] * 25]}, "inputs"),
        ("/gradient", {"model": "rnn-tiny", "inputs": [[0.5] * 25], "targets": [[0.5] * 3]}, "targets"),
        ("/gradient", {"model": "rnn-tiny", "inputs": [["a"] * 25]}, "inputs"),
        ("/gradient", {"model": "densenet-tiny"}, "model"),
        ("/gradient", {"model": "rnn-tiny", "wrt": "weights"}, "wrt"),
        ("/infer", {"model": "densenet-tiny", "inputs": [[[0.0] * 27] * 28]}, "inputs"),
        ("/infer", {"model": "densenet-tiny", "tol": -1}, "tol"),
        ("/infer", {"model": "made-tiny"}, "model"),
    ],
)
def test_bad_compute_requests_name_the_field(client: TestClient, path: str, body: dict, field: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.json()
    assert any(field in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()


def test_malformed_json_unknown_model_and_huge_bodies(client: TestClient) -> None:
    r = client.post("/sample", content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "Traceback" not in r.text
    assert client.post("/sample", json={"model": "no-such"}).status_code == 404
    assert "made-tiny" in client.post("/infer", json={"model": "no-such"}).json()["detail"]
    huge = b'{"model": "made-tiny", "pad": "' + b"x" * (9 * 2**20) + b'"}'
    r = client.post("/sample", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["x-request-id"]


def test_deadline_passed_is_504_and_bad_timeouts_are_422(client: TestClient) -> None:
    slow = {"model": "made-slow", "num_samples": 16, "method": "sequential_naive", "seed": 1}
    r = client.post("/sample", json=slow, headers={"X-Request-Timeout": "0.05"})
    assert r.status_code == 504
    assert "deadline" in r.json()["detail"]
    assert client.post("/sample", json=slow, headers={"X-Request-Timeout": "soon"}).status_code == 422
    assert client.post("/sample", json=slow, headers={"X-Request-Timeout": "1e9"}).status_code == 422
    # the worker dropped the abandoned rows and still answers others
    assert client.post("/sample", json={"model": "made-tiny", "num_samples": 1}).status_code == 200


def test_api_keys(server_registry: Path) -> None:
    with client_for(server_registry, api_keys=["s3cret"]) as c:
        assert c.get("/models").status_code == 401
        assert c.get("/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/sample", json={"model": "made-tiny"}).status_code == 401
        assert c.post("/sample", json={"model": "made-tiny", "num_samples": -1}).status_code == 401  # key first
        ok = c.post("/sample", json={"model": "made-tiny", "num_samples": 1}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        gradient = {"model": "rnn-tiny", "batch": 1, "method": "scan"}
        assert c.post("/gradient", json=gradient, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/infer", json={"model": "densenet-tiny"}, headers={"X-API-Key": "nope"}).status_code == 401
        assert c.get("/healthz").status_code == 200  # probes need no key


def test_the_request_headers_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/sample", "/gradient", "/infer"):
        names = {p["name"] for p in paths[path]["post"].get("parameters", []) if p["in"] == "header"}
        assert {"x-api-key", "authorization", "x-request-timeout"} <= names, path


def test_full_queue_is_503_with_retry_after(server_registry: Path) -> None:
    with client_for(server_registry, max_queue=1) as c:
        slow = {"model": "made-slow", "num_samples": 16, "method": "sequential_naive", "seed": 2}
        first: dict[str, int] = {}
        thread = threading.Thread(target=lambda: first.update(code=c.post("/sample", json=slow).status_code))
        thread.start()
        for _ in range(200):
            if c.get("/metrics").text.count("parafeed_queue_depth 1.0"):
                break
        r = c.post("/sample", json={"model": "made-tiny"})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        thread.join()
        assert first["code"] == 200


def test_metrics_page(client: TestClient) -> None:
    client.post("/sample", json={"model": "made-tiny", "num_samples": 2, "method": "jacobi"})
    text = client.get("/metrics").text
    names = ["parafeed_requests_total", "parafeed_request_seconds", "parafeed_queue_wait_seconds"]
    names += ["parafeed_batch_occupancy", "parafeed_iterations", "parafeed_workers", "parafeed_queue_depth"]
    for name in names:
        assert name in text
    assert 'parafeed_iterations_count{method="jacobi",model="made-tiny"}' in text


def test_continuous_verification_rechecks_answers_in_the_background(server_registry: Path) -> None:
    import time

    with client_for(server_registry, verify_fraction=1.0) as c:
        for seed in range(3):
            body = {"model": "pixelcnnpp-tiny", "num_samples": 2, "seed": seed}
            assert c.post("/sample", json=body).status_code == 200
        line = 'parafeed_verifications_total{model="pixelcnnpp-tiny",outcome="equal"}'
        for _ in range(400):  # every sample of the 3 requests, re-solved in spare rows
            text = c.get("/metrics").text
            if f"{line} 6.0" in text:
                break
            time.sleep(0.05)
        assert f"{line} 6.0" in text
        assert 'outcome="mismatch"' not in text


def test_a_chunked_oversized_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "made-tiny", "pad": "'
        for _ in range(10):
            yield b"x" * 2**20
        yield b'"}'

    r = client.post("/sample", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_an_internal_error_is_a_bare_500_with_a_request_id(server_registry: Path) -> None:
    with client_for(server_registry) as c:

        def broken() -> list[object]:
            raise RuntimeError("boom: this must not reach the client")

        c.app.state.engine.models = broken  # type: ignore[attr-defined]
        r = c.get("/models")
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error"}
        assert "boom" not in r.text
        assert r.headers["x-request-id"]


def test_openapi_describes_every_request_field_and_every_response(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, request, response in (("/sample", "SampleRequest", "SampleResponse"),
                                     ("/infer", "InferRequest", "InferResponse"),
                                     ("/gradient", "GradientRequest", "GradientResponse")):  # fmt: skip
        post = spec["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(request)
        assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(response)
        assert {"404", "413", "422", "503", "504"} <= set(post["responses"]), path
        fields = schemas[request]["properties"]
        assert all(field.get("description") for field in fields.values()), [n for n, f in fields.items()
                                                                            if not f.get("description")]  # fmt: skip
        assert "auto" in fields["method"]["enum"]
    assert "jacobi_split" in schemas["SampleRequest"]["properties"]["method"]["enum"]
    assert "scan" in schemas["GradientRequest"]["properties"]["method"]["enum"]
