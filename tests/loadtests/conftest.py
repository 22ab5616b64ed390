"""Server fixtures (shared with the server tests)."""

from tests.server_fixtures import server_registry  # noqa: F401
