"""Deficit round robin: equal time shares whatever a lane's steps cost; debts are worked off; idle lanes leave."""

from __future__ import annotations

from collections import Counter

from app.worker.fair import DeficitRoundRobin


def serve(drr: DeficitRoundRobin, costs: dict[str, float], seconds: float) -> Counter[str]:
    """Simulate: pick a lane, charge its step cost, until ``seconds`` of work; returns time per lane."""
    spent: Counter[str] = Counter()
    while sum(spent.values()) < seconds:
        key = drr.pick(costs)
        assert isinstance(key, str)
        drr.charge(key, costs[key])
        spent[key] += costs[key]
    return spent


def test_lanes_with_cheap_and_expensive_steps_get_equal_time() -> None:
    spent = serve(DeficitRoundRobin(0.02), {"sample": 0.001, "gradient": 0.15, "infer": 0.04}, 60.0)
    for lane in ("sample", "gradient", "infer"):
        assert abs(spent[lane] / 20.0 - 1) < 0.05, spent


def test_a_lone_lane_is_served_without_pause_and_an_idle_lane_leaves() -> None:
    drr = DeficitRoundRobin(0.01)
    for _ in range(100):
        assert drr.pick(["gradient"]) == "gradient"
        drr.charge("gradient", 0.2)  # ten quanta of debt each time: still served at once, nobody else waits
    assert drr.pick([]) is None
    assert drr.credit == {}
    assert drr.pick(["sample"]) == "sample"  # a new lane starts with one quantum, no debt inherited
    assert drr.credit["sample"] == 0.01


def test_a_lane_that_was_idle_goes_first() -> None:
    drr = DeficitRoundRobin(0.02)
    assert drr.pick(["gradient"]) == "gradient"
    drr.charge("gradient", 0.01)  # still in credit
    assert drr.pick(["gradient", "sample"]) == "sample"  # a new arrival waits for no one
    drr.charge("sample", 0.03)
    assert drr.pick(["gradient", "sample"]) == "gradient"


def test_the_cheap_lane_is_never_kept_waiting_behind_more_than_one_expensive_step() -> None:
    drr = DeficitRoundRobin(0.02)
    costs = {"sample": 0.002, "gradient": 0.1}
    waits, since_sample = [], 0.0
    for _ in range(2000):
        key = drr.pick(costs)
        assert isinstance(key, str)
        drr.charge(key, costs[key])
        if key == "sample":
            waits.append(since_sample)
            since_sample = 0.0
        else:
            since_sample += costs[key]
    assert max(waits) <= 0.1
