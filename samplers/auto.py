"""``method="auto"``: the fastest exact method for a task and model family on a device type, from measurements.

The table ``auto_methods.json`` (shipped, and rewritten by ``parafeed bench`` on the machine it runs on) maps
"<family>" (sampling), "<family>-gradient" and "<family>-infer" to {device type: method}. Each entry is written by
the benchmark that measured it, in the same run as the sequential baseline:
``benchmarks/sampling.py`` (made, pixelcnnpp), ``benchmarks/gradients.py`` (rnn-gradient),
``benchmarks/dense.py`` (densenet-infer). What was never measured falls back to an exact method: plain Jacobi for
sampling (never slower than sequential by more than its confirming pass), the sequential computation otherwise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "auto_methods.json"
SAMPLING_FALLBACK = "jacobi"
FALLBACK = "sequential"


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, str]]:
    if not TABLE.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(TABLE.read_text())
    return data


def pick_method(key: str, device_type: str, fallback: str = FALLBACK) -> str:
    """The measured fastest exact method for ``key`` on ``device_type``; ``fallback`` where nothing was measured."""
    return _table().get(key, {}).get(device_type, fallback)


def record(choices: dict[str, str], device_type: str) -> None:
    """Store measured choices ({key: method}) for a device type, keeping every other entry."""
    table = {key: dict(value) for key, value in _table().items()}
    for key, method in choices.items():
        table.setdefault(key, {})[device_type] = method
    TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    _table.cache_clear()
    print(f"recorded for method='auto' on {device_type}: {choices} in {TABLE}")
