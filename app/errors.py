"""Error mapping, in one place: what any failure means to the client (status and body), never a traceback.

The caller's mistakes name themselves: a request field that does not fit the model is a 422 naming the field (the
shape FastAPI's own validation errors have), an unknown model a 404. Missing test data is the server's state, a
503 that says what to do. Everything else is ours: a 500 with no details, logged with its traceback. The API's
routes and the worker both answer through ``answer_for``.
"""

from __future__ import annotations

import logging
from typing import Any

from models.data import DataNotFoundError
from models.registry import UnknownModelError
from samplers.inputs import InputError

log = logging.getLogger("parafeed.errors")
GONE = 499  # the caller went away before the answer (nginx's code): logged and counted, sent to nobody
LATE = 504  # the request's deadline passed


def field_detail(field: str, message: str) -> list[dict[str, Any]]:
    """The body of a 422 naming a body field."""
    return [{"loc": ["body", field], "msg": message, "type": "value_error"}]


def answer_for(error: Exception, context: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(HTTP status, ``detail``) for a failure; ``context`` goes into the log of the ones that are ours."""
    if isinstance(error, InputError):
        return 422, field_detail(error.field, error.message)
    if isinstance(error, UnknownModelError):
        return 404, str(error.args[0])
    if isinstance(error, DataNotFoundError):  # inputs drawn from the test set need the dataset installed
        log.error("test-set inputs requested but no dataset is installed", extra=context or {})
        return 503, f"this server has no test set to draw inputs from; send inputs. {error}"
    log.error("request failed", exc_info=error, extra=context or {})
    return 500, "internal error"
