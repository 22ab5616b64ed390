"""Iteration-level batching: answers independent of the batch, short requests not held back by long ones."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs import Job, Result
from app.main import create_app
from app.settings import Settings
from app.worker import Worker
from app.worker.owners import SpotCheck
from samplers.engine import Engine
from samplers.sampling import sample


def test_concurrent_mixed_requests_each_equal_the_answer_computed_alone(server_registry: Path) -> None:
    rng = random.Random(0)
    requests = []
    for _ in range(24):
        model = rng.choice(["made-tiny", "pixelcnnpp-tiny", "pixelcnnpp-rgb-tiny"])
        methods = ["sequential", "jacobi", "jacobi_gs", "gs_jacobi"] + (
            ["jacobi_split", "sequential_naive"] if model == "made-tiny" else []
        )
        requests.append({"model": model, "num_samples": rng.randint(1, 6), "method": rng.choice(methods),
                         "seed": rng.randint(0, 10**6)})  # fmt: skip
    app = create_app(Settings(registry=str(server_registry), max_batch_rows=32, max_samples=8))
    with TestClient(app) as client, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda body: client.post("/sample", json=body), requests))
    engine = Engine("cpu", server_registry)
    for body, answer in zip(requests, answers, strict=True):
        assert answer.status_code == 200
        alone = sample(engine, body["model"], body["num_samples"], body["method"], body["seed"])
        assert answer.json()["samples"] == alone.samples, body
        assert answer.json()["iterations"] == alone.iterations, body


def finish_order(registry: Path, batching: str) -> list[str]:
    slow = {"model": "made-slow", "num_samples": 8, "method": "sequential_naive", "seed": 1}
    fast = {"model": "made-slow", "num_samples": 1, "method": "jacobi", "seed": 2}
    order: list[str] = []
    with TestClient(create_app(Settings(registry=str(registry), batching=batching))) as client:

        def run(name: str, body: dict) -> None:
            assert client.post("/sample", json=body).status_code == 200
            order.append(name)

        first = threading.Thread(target=run, args=("slow", slow))
        first.start()
        time.sleep(0.5)  # the slow request is iterating
        second = threading.Thread(target=run, args=("fast", fast))
        second.start()
        first.join()
        second.join()
    return order


@pytest.mark.parametrize(("batching", "expected"), [("iteration", ["fast", "slow"]), ("static", ["slow", "fast"])])
def test_a_short_request_overtakes_a_long_one_only_with_iteration_batching(
    server_registry: Path, batching: str, expected: list[str]
) -> None:
    assert finish_order(server_registry, batching) == expected


class FakeSource:
    """A pure unit-test stand-in for a queue: records what the worker asks for and answers."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.asked, self.results, self.released = list(jobs), [], {}, []  # type: ignore[var-annotated]

    def fetch(self, max_jobs: int, timeout_s: float) -> list[Job]:
        self.asked.append(max_jobs)
        taken, self.jobs = self.jobs[:max_jobs], self.jobs[max_jobs:]
        return taken

    def complete(self, job: Job, result: Result) -> None:
        assert job.id not in self.results
        self.results[job.id] = result

    def release(self, job: Job) -> None:
        self.released.append(job.id)

    def beat(self) -> None:
        pass

    def ready(self, wanted: int) -> bool:
        return bool(self.jobs)

    def cancelled(self, job_ids: set[str]) -> set[str]:
        return job_ids & self.gone

    gone: set[str] = set()  # noqa: RUF012  (a test may abandon jobs here)


def sample_job(n: int, seed: int, model: str = "made-tiny") -> Job:
    payload = {"model": model, "num_samples": n, "method": "jacobi", "seed": seed, "block_size": None,
               "max_iterations": None, "verify": False, "format": "array"}  # fmt: skip
    return Job("sample", payload, deadline=time.time() + 60)


def test_worker_never_holds_more_rows_than_its_budget(server_registry: Path) -> None:
    jobs = [sample_job(3, seed) for seed in range(10)]
    source = FakeSource(jobs)
    worker = Worker(Engine("cpu", server_registry), source, Settings(max_batch_rows=7, max_samples=7, max_wait_ms=0))
    for _ in range(500):
        worker.turn()
        assert worker.active_rows() <= 7
        if len(source.results) == len(jobs):
            break
    assert all(r.status == 200 for r in source.results.values())
    assert max(source.asked) <= 7


def test_drain_hands_back_what_it_cannot_finish(server_registry: Path) -> None:
    jobs = [sample_job(4, 1, "made-slow"), sample_job(2, 2)]
    jobs[0].payload["method"] = "sequential_naive"  # 784 iterations: no row can finish within one turn
    source = FakeSource(jobs)
    worker = Worker(Engine("cpu", server_registry), source, Settings(max_batch_rows=4, max_samples=4, max_wait_ms=0,
                                                                     drain_timeout_s=0.0))  # fmt: skip
    worker.turn()  # the slow job takes all rows; the other is not even fetched (no free rows)
    assert worker.active_rows() == 4
    assert [job.id for job in source.jobs] == [jobs[1].id]
    worker.drain()
    assert source.released == [jobs[0].id]
    assert source.results == {}


def run_until_answered(worker: Worker, source: FakeSource, jobs: list[Job], turns: int = 2000) -> dict[str, int]:
    """Turn the worker until every job is answered; returns the turn at which each job was answered."""
    answered: dict[str, int] = {}
    for turn in range(turns):
        worker.turn()
        for job_id in source.results:
            answered.setdefault(job_id, turn)
        if len(answered) == len(jobs):
            return answered
    raise AssertionError(f"answered {len(answered)} of {len(jobs)} jobs")


def test_verify_rides_in_the_batch_and_holds_nobody_else_back(server_registry: Path) -> None:
    checked, plain = sample_job(3, 7), sample_job(2, 8)
    checked.payload["verify"] = True
    source = FakeSource([checked, plain])
    # turn_ms ~0: one iteration per turn, so the batch is seen between iterations
    settings = Settings(max_batch_rows=16, max_samples=8, max_wait_ms=0, turn_ms=1e-6)
    worker = Worker(Engine("cpu", server_registry), source, settings)
    worker.turn()
    assert worker.active_rows() == 3 + 2  # verify certifies the answer afterwards: one evaluation, not 784
    answered = run_until_answered(worker, source, [checked, plain])
    assert answered[plain.id] <= answered[checked.id]  # the plain request did not wait for the check
    body = source.results[checked.id].body.model_dump()
    assert body["verified"] is True
    assert body["verified_per_sample"] == [True, True, True]
    alone = sample(Engine("cpu", server_registry), "made-tiny", 3, "jacobi", 7)
    assert body["samples"] == alone.samples
    assert body["iterations"] == alone.iterations


def test_background_checks_run_in_spare_rows_while_the_batch_is_busy(server_registry: Path) -> None:
    from prometheus_client import REGISTRY

    def equal_checks() -> float:
        labels = {"model": "made-tiny", "outcome": "equal"}
        return REGISTRY.get_sample_value("parafeed_verifications_total", labels) or 0.0

    before = equal_checks()
    quick, busy = sample_job(4, 3), sample_job(4, 4, "made-slow")
    busy.payload["method"] = "sequential_naive"  # keeps the worker busy for 784 iterations
    source = FakeSource([quick, busy])
    settings = Settings(max_batch_rows=16, max_samples=8, max_wait_ms=0, verify_fraction=1.0, verify_rows=2)
    worker = Worker(Engine("cpu", server_registry), source, settings)
    for _ in range(400):
        worker.turn()
        held = sum(len(g.owners_of_kind(SpotCheck)) for g in worker.lanes.values())
        assert held <= 2  # verification never holds more rows than verify_rows
        if equal_checks() - before == 4:
            break
    assert equal_checks() - before == 4  # all four answered samples re-checked, equal bit for bit
    assert busy.id not in source.results  # ...while the long request was still running


def test_whole_jobs_are_fetched_one_at_a_time(server_registry: Path) -> None:
    payload = {"model": "rnn-tiny", "inputs": None, "targets": None, "batch": 2, "seed": 0, "method": "scan",
               "wrt": "params", "max_iterations": None, "verify": False}  # fmt: skip
    jobs = [Job("gradient", dict(payload), deadline=time.time() + 60) for _ in range(5)]
    source = FakeSource(jobs)
    worker = Worker(Engine("cpu", server_registry), source, Settings(max_wait_ms=0))
    for turn in range(1, 6):
        worker.turn()
        assert len(source.results) == turn
        assert len(source.jobs) == len(jobs) - turn  # nothing fetched beyond the job it runs now
    assert all(r.status == 200 for r in source.results.values())


def test_errors_become_answers_that_name_the_fault() -> None:
    from app.errors import answer_for
    from models.data import DataNotFoundError
    from models.registry import UnknownModelError
    from samplers.inputs import InputError

    status, detail = answer_for(InputError("inputs", "must be finite numbers"))
    assert (status, detail[0]["loc"]) == (422, ["body", "inputs"])
    assert answer_for(UnknownModelError("unknown model 'x'"))[0] == 404
    status, detail = answer_for(DataNotFoundError("install dataset-fashion-mnist"))
    assert status == 503
    assert "dataset-fashion-mnist" in detail
    assert answer_for(ValueError("internal detail that must not leak")) == (500, "internal error")


class ArrivingSource(FakeSource):
    """A job arrives while the worker iterates: ``ready`` reports it on its ``after``-th call."""

    def __init__(self, jobs: list[Job], arrival: Job, after: int) -> None:
        super().__init__(jobs)
        self.arrival, self.after, self.asked_ready = arrival, after, 0

    def ready(self, wanted: int) -> bool:
        self.asked_ready += 1
        if self.asked_ready == self.after:
            self.jobs.append(self.arrival)
        return bool(self.jobs) and wanted > 0


def test_a_turn_iterates_until_a_job_arrives_for_free_rows(server_registry: Path) -> None:
    long = sample_job(2, 1, "made-slow")
    long.payload["method"] = "sequential_naive"  # 784 iterations
    arrival = sample_job(1, 2)
    source = ArrivingSource([long], arrival, after=4)  # asked once after admission, then after each iteration
    # turn_ms 60 s: only an arrival (or a finished row) may end this turn
    worker = Worker(Engine("cpu", server_registry), source, Settings(max_batch_rows=8, max_samples=8, turn_ms=60e3))
    worker.turn()
    (group,) = worker.lanes.values()
    assert group.batch.iterations.tolist() == [3, 3]  # three iterations in one turn, then it looked up
    worker.turn()
    assert source.jobs == []  # the arrival was taken in at the start of the next turn


def test_only_static_batching_waits_to_form_a_batch_by_default() -> None:
    assert Settings().batch_wait_s == 0.0  # iteration-level: a later job joins at the next iteration anyway
    assert Settings(batching="static").batch_wait_s == 0.002
    assert Settings(max_wait_ms=5).batch_wait_s == 0.005


def gradient_job(model: str = "gru-tiny", **extra: object) -> Job:
    payload = {"model": model, "inputs": None, "targets": None, "batch": 8, "seed": 0, "method": "scan",
               "wrt": "params", "max_iterations": None, "verify": False, **extra}  # fmt: skip
    return Job("gradient", payload, deadline=time.time() + 60)


def test_sliced_jobs_share_the_worker_with_sampling_rows(server_registry: Path) -> None:
    """A gradient job runs in slices between iterations of the sampling rows: the sample is answered while the
    gradient is still being computed, and the gradient equals the one computed alone."""
    slow = gradient_job("gru-tiny", batch=64, method="jacobi", verify=True)
    quick = sample_job(2, 5)
    source = FakeSource([slow, quick])
    settings = Settings(max_batch_rows=8, max_samples=8, max_wait_ms=0, slice_ms=0.001, turn_ms=0.001)
    worker = Worker(Engine("cpu", server_registry), source, settings)
    answered = run_until_answered(worker, source, [slow, quick])
    assert answered[quick.id] < answered[slow.id]
    body = source.results[slow.id].body.model_dump()
    alone = Engine("cpu", server_registry).call("gradient", **slow.payload)
    assert body["gradients"] == alone.model_dump()["gradients"]


def test_late_or_abandoned_sliced_jobs_are_stopped_and_answered_with_their_status(server_registry: Path) -> None:
    late, gone, fine = gradient_job(batch=64, verify=True), gradient_job(batch=64, verify=True), gradient_job()
    source = FakeSource([late, gone, fine])
    source.gone = {gone.id}
    settings = Settings(max_wait_ms=0, slice_ms=0.001, turn_ms=0.001, expiry_check_ms=0.001)
    worker = Worker(Engine("cpu", server_registry), source, settings)
    worker.turn()  # all three admitted (each in its slice lane), a slice or so run
    late.deadline = time.time() - 1
    run_until_answered(worker, source, [late, gone, fine])
    assert {source.results[j.id].status for j in (late, gone, fine)} == {504, 499, 200}
    assert source.results[late.id].status == 504
    assert source.results[gone.id].status == 499
    assert not any(worker.sliced.values())  # nothing left running


def test_sliced_jobs_wait_for_the_memory_budget(server_registry: Path) -> None:
    jobs = [gradient_job(batch=64) for _ in range(3)]
    source = FakeSource(jobs)
    worker = Worker(Engine("cpu", server_registry), source, Settings(max_wait_ms=0, worker_memory_mb=1))
    worker.fetch(0.0)
    worker.admit()
    assert sum(len(lane) for lane in worker.sliced.values()) == 1  # one alone always fits; the others wait
    run_until_answered(worker, source, jobs)
    assert all(source.results[j.id].status == 200 for j in jobs)
