"""Server fixtures (shared with the load tests)."""

from tests.server_fixtures import redis_server, server_registry  # noqa: F401
