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
import time
from pathlib import Path

import httpx

from benchmarks.processes import PARAFEED, free_port

ROOT = Path(__file__).resolve().parent.parent


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
    port = free_port()
    serve = [*PARAFEED, "serve", "--port", str(port)]
    if args.registry:
        serve += ["--registry", args.registry]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PARAFEED_LOG_JSON": "true"}
    server = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        prefix = args.out / "locust"
        locust = [sys.executable, "-m", "locust", "--config", str(ROOT / "loadtests" / "locust.conf"), "--host", base,
                  "--run-time", args.run_time, "--users", str(args.users), "--csv", str(prefix)]  # fmt: skip
        status = subprocess.run(locust, cwd=ROOT, env=env, check=False).returncode
        plot(Path(f"{prefix}_stats_history.csv"), args.out / "locust-latency.png")
        return status
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Until /readyz answers 200; the run stops if the server dies or never gets ready."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"server failed to start (exit code {server.returncode})")
        time.sleep(0.05)
    raise SystemExit(f"server not ready after {timeout_s:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
