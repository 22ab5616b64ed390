"""What every command shares: settings from the environment overridden by flags, JSON output."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.settings import Settings

# Flags that are also settings: the flag wins over the environment.
FLAGS = ("host", "port", "redis_url", "device", "batching", "registry", "data", "threads")


def settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment (PARAFEED_*), overridden by the flags given on the command line."""
    given: dict[str, Any] = {name: getattr(args, name, None) for name in FLAGS}
    flags: dict[str, Any] = {k: (str(v) if k in ("registry", "data") else v) for k, v in given.items() if v is not None}
    return Settings(**flags)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2))
