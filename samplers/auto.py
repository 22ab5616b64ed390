"""``method="auto"``: the fastest exact method for a model family on a device type, from measurements.

The table is written by ``benchmarks/sampling.py`` (wall-clock per method, same run, same batch) and shipped
in ``auto_methods.json``; families or devices it has not measured fall back to plain Jacobi, which is exact and
never slower than sequential by more than its confirming pass.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "auto_methods.json"
FALLBACK = "jacobi"


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, str]]:
    if not TABLE.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(TABLE.read_text())
    return data


def pick_method(family: str, device_type: str, fallback: str = FALLBACK) -> str:
    """The measured fastest exact method; ``fallback`` where nothing was measured."""
    return _table().get(family, {}).get(device_type, fallback)
