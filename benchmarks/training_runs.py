"""Training runs solved in parallel over their steps by MGRIT (Schroder, arXiv 1708.02276; ``models.training_runs``,
``solvers.mgrit``, ``solvers.mgrit_dist``) against serial training, in the same run.

For each configuration: MGRIT cycles to the tolerance, the residual and convergence factor per cycle, the parallel
depth (sequential optimizer-step evaluations on the critical path, every level) against K (serial training's
depth), the work (step evaluations, fine and coarse) against K, the distance to serial training's final weights,
and the measured wall times of both on this machine. The configurations:
  - regression (sin, 1-16-16-1) and classification (Fashion-MNIST 7x7, 49-24-10), K = 1024, SGD lr 0.002,
    m = 8, three levels, FCF, the "scaled" coarse step, to 1e-6;
  - the regression run on 2 ranks (``parafeed train-run --ranks 2``: torchrun, gloo), wall time only differs;
  - an exact-termination run (K = 256, m = 4, two levels, tol 0): bit for bit serial SGD's weights;
  - a momentum run (mu = 0.9) and the K = 4096 regression run, where convergence slows (reported as measured).

    python -m benchmarks.training_runs [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.harness import RESULTS, environment, save_figure, write_json

# (label, train-run flags)
CASES: list[tuple[str, list[str]]] = [
    ("regression K=1024", ["regression", "--steps", "1024", "--tol", "1e-6"]),
    ("classification K=1024", ["classification", "--steps", "1024", "--tol", "1e-6"]),
    ("regression K=1024, 2 ranks", ["regression", "--steps", "1024", "--tol", "1e-6", "--ranks", "2"]),
    ("regression K=256, exact", ["regression", "--steps", "256", "--coarsening", "4", "--levels", "2", "--tol", "0"]),
    ("regression K=1024, momentum 0.9", ["regression", "--steps", "1024", "--momentum", "0.9", "--max-cycles", "12"]),
    ("regression K=4096", ["regression", "--steps", "4096", "--tol", "1e-6", "--max-cycles", "16"]),
]
QUICK = {"regression K=1024", "regression K=256, exact"}


def run_case(flags: list[str]) -> dict[str, Any]:
    """One ``parafeed train-run`` (its own process, as users run it): its JSON report."""
    with TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "app.cli", "train-run", *flags, "--out", str(out)], check=False,
                       capture_output=True, timeout=3600)  # fmt: skip
        report: dict[str, Any] = json.loads(out.read_text())
    return report


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        residuals = [max(r, 1e-17) for r in result["report"]["mgrit"]["residuals"]]
        left.semilogy(range(len(residuals)), residuals, "o-", label=result["label"], markersize=3)
    left.axhline(1e-6, color="gray", lw=0.8, ls="--")
    left.set(xlabel="MGRIT cycle", ylabel="residual max |Phi(u_c-1) - u_c|", title="Convergence (0 plotted at 1e-17)")
    left.legend(fontsize=7)
    labels = [r["label"] for r in results]
    depth = [r["report"]["mgrit"]["depth"] for r in results]
    serial = [r["report"]["run"]["steps"] for r in results]
    ys = range(len(results))
    right.barh([y + 0.2 for y in ys], serial, height=0.4, label="serial training (K)", color="gray")
    right.barh([y - 0.2 for y in ys], depth, height=0.4, label="MGRIT depth", color="tab:blue")
    right.set_yticks(list(ys), labels, fontsize=7)
    right.set(xlabel="sequential optimizer-step evaluations", title="Parallel depth")
    right.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {sorted(QUICK)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started, results = time.perf_counter(), []
    for label, flags in CASES:
        if args.quick and label not in QUICK:
            continue
        report = run_case(flags)
        m = report["mgrit"]
        serial = report["serial"]["wall_s"]
        print(f"{label}: {m['cycles']} cycles, residual {m['residual']:.1e}, depth {m['depth']} vs K "
              f"{report['run']['steps']}, wall {m['wall_s']:.1f} s vs serial {serial:.2f} s")  # fmt: skip
        results.append({"label": label, "command": "parafeed train-run " + " ".join(flags), "report": report})
    payload = {"environment": environment(), "results": results, "seconds": round(time.perf_counter() - started, 1)}
    print(write_json("training-runs-cpu", payload, args.out))
    print(plot(results, args.out / "training-runs-cpu.png"))


if __name__ == "__main__":
    main()
