"""What every command shares: settings from the environment overridden by flags, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
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


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (it sets WORLD_SIZE in every process)."""
    return "WORLD_SIZE" in os.environ


def relaunch_under_torchrun(processes: int) -> int:
    """Run this same command in ``processes`` processes under torchrun (standalone: a free loopback rendezvous);
    the exit status of the run (non-zero if any process failed: torchrun then stops the others)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        raise ValueError("torchrun not found next to this Python or on PATH")
    return subprocess.call([torchrun, "--standalone", f"--nproc-per-node={processes}", "-m", "app.cli", *sys.argv[1:]])
