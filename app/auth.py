"""API keys, checked for every route before anything else: closed unless the server has no keys at all.

With keys configured (``api_keys``), every request needs one, in ``X-API-Key`` or ``Authorization: Bearer``
(compared in constant time), except the probes ``/healthz`` and ``/readyz``: documentation, the OpenAPI schema
and ``/metrics`` included. A Prometheus scraper may instead use the ``metrics_token`` setting, good for
``/metrics`` alone. An empty key is a configuration error, refused at start-up (``app.settings``), never a way in.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

OPEN = frozenset({"/healthz", "/readyz"})  # orchestrators probe these without credentials
METRICS = "/metrics"


def presented(headers: Mapping[str, str]) -> str:
    """The key a request carries: X-API-Key, else the token of Authorization: Bearer, else ""."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else "")


def matches(given: str, keys: list[str]) -> bool:
    return bool(given) and any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


class Authenticator:
    def __init__(self, keys: list[str], metrics_token: str | None = None) -> None:
        self.keys, self.metrics_token = keys, metrics_token

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def allows(self, path: str, headers: Mapping[str, str]) -> bool:
        if not self.keys or path in OPEN:
            return True
        given = presented(headers)
        if path == METRICS and self.metrics_token and matches(given, [self.metrics_token]):
            return True
        return matches(given, self.keys)
