"""Run the locust load test against a freshly started embedded server on a free loopback port.

    python -m loadtests.run [--run-time 60s] [--users 8] [--registry DIR] [--out benchmarks/results]

Writes <out>/locust_stats.csv (summary), <out>/locust_stats_history.csv and <out>/locust-latency.png (latency
over time); exits with locust's status (1 when a threshold failed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.processes import ROOT, Processes


def plot(history: Path, path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in csv.DictReader(history.open()) if r["Name"] == "Aggregated"]
    if not rows:
        return
    start = float(rows[0]["Timestamp"])
    t = [float(r["Timestamp"]) - start for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for column, label in (("50%", "p50"), ("95%", "p95"), ("99%", "p99")):
        top.plot(t, [float(r[column]) if r[column] not in ("N/A", "") else float("nan") for r in rows], label=label)
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.legend()
    top.set_title("parafeed under load (embedded server, loopback)")
    bottom.plot(t, [float(r["Requests/s"]) for r in rows], label="requests/s")
    bottom.plot(t, [float(r["Failures/s"]) for r in rows], label="failures/s")
    bottom.set_xlabel("seconds")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--registry", help="checkpoint registry (default: the shipped models)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PARAFEED_LOG_JSON": "true"}
    procs = Processes()
    try:
        try:
            base = procs.server(*(["--registry", args.registry] if args.registry else []), env=env, device=None)
        except RuntimeError as error:  # died or never got ready: the run stops with the reason
            raise SystemExit(f"server failed to start: {error}") from None
        prefix = args.out / "locust"
        locust = [sys.executable, "-m", "locust", "--config", str(ROOT / "loadtests" / "locust.conf"), "--host", base,
                  "--run-time", args.run_time, "--users", str(args.users), "--csv", str(prefix)]  # fmt: skip
        status = subprocess.run(locust, cwd=ROOT, env=env, check=False).returncode
        plot(Path(f"{prefix}_stats_history.csv"), args.out / "locust-latency.png")
        return status
    finally:
        procs.stop()


if __name__ == "__main__":
    raise SystemExit(main())
