"""Run a locust scenario against a freshly started embedded server on a free loopback port.

    python -m loadtests.run [--scenario mix|mixed] [--run-time 60s] [--users 8] [--registry DIR] [--out DIR]

Scenarios: ``mix`` (``loadtests/locustfile.py``: a realistic mix of requests) and ``mixed`` (``loadtests/mixed.py``:
heavy jobs, light requests and hostile clients; the shipped models, its user counts fixed). Writes
<out>/<prefix>_stats.csv (summary), <out>/<prefix>_stats_history.csv and a latency-over-time PNG (``locust`` and
``locust-latency.png`` for mix, ``locust-mixed`` and ``locust-mixed-latency.png`` for mixed); exits with locust's
status (1 when a threshold failed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.processes import ROOT, Processes

SCENARIOS = {  # name -> (locustfile, csv prefix, the row plotted, title)
    "mix": ("locustfile.py", "locust", "Aggregated", "parafeed under load (embedded server, loopback)"),
    "mixed": ("mixed.py", "locust-mixed", "/sample (light)",
              "light requests beside heavy jobs and hostile clients (embedded server, loopback)"),
}  # fmt: skip


def plot(history: Path, path: Path, name: str = "Aggregated", title: str = "") -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in csv.DictReader(history.open()) if r["Name"] == name]
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
    top.set_title(title)
    bottom.plot(t, [float(r["Requests/s"]) for r in rows], label="requests/s")
    bottom.plot(t, [float(r["Failures/s"]) for r in rows], label="failures/s")
    bottom.set_xlabel("seconds")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="mix")
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
        locustfile, name, row, title = SCENARIOS[args.scenario]
        prefix = args.out / name
        users = ["--users", str(args.users)] if args.scenario == "mix" else ["--users", "7", "--spawn-rate", "7"]
        locust = [sys.executable, "-m", "locust", "--config", str(ROOT / "loadtests" / "locust.conf"), "--host", base,
                  "--locustfile", str(ROOT / "loadtests" / locustfile), "--run-time", args.run_time, *users,
                  "--csv", str(prefix)]  # fmt: skip
        status = subprocess.run(locust, cwd=ROOT, env=env, check=False).returncode
        plot(Path(f"{prefix}_stats_history.csv"), args.out / f"{name}-latency.png", row, title)
        return status
    finally:
        procs.stop()


if __name__ == "__main__":
    raise SystemExit(main())
