"""``method="auto"``: the fastest exact method for a model family and task on a device type, from measurements.

The table ``auto_methods.json`` (shipped, and rewritten by ``parafeed bench`` on the machine it runs on) maps an
offer's ``auto_key`` (``samplers.family.Offer``: e.g. "made", "rnn-gradient", "densenet-infer") to {device type:
{"method": ..., "block_size": ..., "by_size": {"1": {...}, "16": {...}}}}: the best over the measured sizes, and
per request size where a benchmark measured several (a request takes the largest measured size <= its own). Each
entry is written by the benchmark that measured it, in the same run as
the sequential baseline: ``benchmarks/sampling.py`` (samplers), ``benchmarks/gradients.py`` (rnn-gradient),
``benchmarks/dense.py`` (densenet-infer). What was never measured falls back to the offer's exact ``fallback``.
Requests are resolved in one place, ``samplers.engine.Engine.resolve``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent / "auto_methods.json"


@dataclass(frozen=True)
class Choice:
    method: str
    block_size: int | None = None  # for the hybrids: the measured block / window, in unknowns
    by_size: tuple[tuple[int, Choice], ...] = ()  # measured per request size (samples): (size, choice), ascending

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.block_size is not None:
            out["block_size"] = self.block_size
        if self.by_size:
            out["by_size"] = {str(size): choice.as_json() for size, choice in self.by_size}
        return out

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Choice:
        sizes = tuple(sorted((int(k), cls.from_json(v)) for k, v in entry.get("by_size", {}).items()))
        return cls(entry["method"], entry.get("block_size"), sizes)

    def for_size(self, size: int | None) -> Choice:
        """The choice measured at the largest size <= ``size`` (the smallest measured one below it)."""
        if size is None or not self.by_size:
            return Choice(self.method, self.block_size)
        fitting = [choice for measured, choice in self.by_size if measured <= size]
        return fitting[-1] if fitting else self.by_size[0][1]


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, Any]]]:
    if not TABLE.exists():
        return {}
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(TABLE.read_text())
    return data


def pick(key: str, device_type: str, fallback: str, size: int | None = None) -> Choice:
    """The measured fastest exact method for ``key`` on ``device_type`` at request size ``size`` (samples, where
    measured per size); ``fallback`` where nothing was measured."""
    entry = _table().get(key, {}).get(device_type)
    return Choice.from_json(entry).for_size(size) if entry else Choice(fallback)


def record(choices: dict[str, Choice], device_type: str) -> None:
    """Store measured choices ({key: choice}) for a device type, keeping every other entry."""
    table = {key: dict(value) for key, value in _table().items()}
    for key, choice in choices.items():
        table.setdefault(key, {})[device_type] = choice.as_json()
    TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    _table.cache_clear()
    print(f"recorded for method='auto' on {device_type}: {choices} in {TABLE}")
