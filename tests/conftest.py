"""Shared test configuration: fixtures (``tests/fixtures``), markers and hypothesis profiles.

``pytest -m "not integration"`` runs the fast unit tests alone (no Redis, no server or worker processes, no
locust, no hadolint, no package installs); ``make test`` runs everything.
"""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.fixtures.registries", "tests.fixtures.servers"]

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
