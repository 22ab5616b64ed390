"""``method="auto"``: the fastest exact method for a model family and task on a device type, from measurements.

The table ``auto_methods.json`` (shipped, and rewritten by ``parafeed bench`` on the machine it runs on) maps an
offer's ``auto_key`` (``samplers.family.Offer``: e.g. "made", "rnn-gradient", "densenet-infer") to {device type:
{"method": ..., "block_size": ...}}. Each entry is written by the benchmark that measured it, in the same run as
the sequential baseline: ``benchmarks/sampling.py`` (samplers), ``benchmarks/gradients.py`` (rnn-gradient),
``benchmarks/dense.py`` (densenet-infer). What was never measured falls back to the offer's exact ``fallback``.
Requests are resolved in one place, ``samplers.engine.Engine.resolve``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent / "auto_methods.json"


@dataclass(frozen=True)
class Choice:
    method: str
    block_size: int | None = None  # for the hybrids: the measured block / window, in unknowns

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, Any]]]:
    if not TABLE.exists():
        return {}
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(TABLE.read_text())
    return data


def pick(key: str, device_type: str, fallback: str) -> Choice:
    """The measured fastest exact method for ``key`` on ``device_type``; ``fallback`` where nothing was measured."""
    entry = _table().get(key, {}).get(device_type)
    return Choice(**entry) if entry else Choice(fallback)


def record(choices: dict[str, Choice], device_type: str) -> None:
    """Store measured choices ({key: choice}) for a device type, keeping every other entry."""
    table = {key: dict(value) for key, value in _table().items()}
    for key, choice in choices.items():
        table.setdefault(key, {})[device_type] = choice.as_json()
    TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    _table.cache_clear()
    print(f"recorded for method='auto' on {device_type}: {choices} in {TABLE}")
