"""The README's result tables, generated from the result files: every figure shown is one a benchmark measured.

Each table lives in README.md between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``; this script
rewrites what is between the markers and nothing else (the prose around the tables is written by people).
A result file that does not exist yet leaves a note saying which command produces it.

    python -m benchmarks.report [--readme README.md] [--results benchmarks/results] [--check]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "models" / "checkpoints" / "manifest.json"
Rows = list[list[str]]


def markdown(header: list[str], rows: Rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def measured_on(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    device = env.get("device_name") or f"{env['cpu_count']}-core {env['machine']} CPU"
    where = f"{device}, torch {env['torch']}, {env['torch_threads']} threads, commit {env.get('commit') or 'n/a'}"
    return f"\n\n<sub>Measured {env['date'][:10]} on {where}: `{env['command']}`</sub>"


def models_table(results: Path) -> str | None:
    manifest = json.loads(MANIFEST.read_text())
    rows: Rows = []
    for name, entry in manifest.items():
        figures = entry["eval"]
        if "nll_nats" in figures:
            figure = f"{figures['nll_nats']:.2f} nats/image ({figures['bits_per_dim']:.3f} bits/dim)"
            baseline = figures.get("baseline_independent_bernoulli_nll_nats")
            base = f"independent Bernoulli: {baseline:.1f} nats" if baseline else ""
        elif "accuracy" in figures:
            figure, base = f"accuracy {figures['accuracy']:.2%}", ""
        else:
            figure = f"MSE {figures['mse']:.5f} per pixel"
            base = f"repeat previous pixel: {figures['baseline_repeat_previous_mse']:.5f}"
        minutes = entry["train_seconds"] / 60 if entry.get("train_seconds") else float("nan")
        rows.append(
            [f"`{name}`", entry["description"], figure, base, f"{minutes:.0f} min", f"`{entry['train_command']}`"]
        )
    header = ["model", "what", "test set (10k)", "baseline", "training (2 CPU cores)", "reproduce"]
    return markdown(header, rows)


def sampling_table(results: Path) -> str | None:
    payload = load(results, "sampling-cpu")
    if payload is None:
        return None
    rows: Rows = []
    for r in payload["results"]:
        if r["model"] == "made-fmnist" and r["batch"] != 100 and ("x0 =" in r["run"] or "synchronous" in r["run"]):
            continue  # the first-guess and batching variants: shown at batch 100
        equal = "n/a" if r["equal_fraction"] is None else f"{r['equal_fraction']:.0%}"
        star = " (extrapolated)" if r["extrapolated"] else ""
        sweeps = r.get("direct_sweeps_per_evaluation")
        label = r["run"] + (f" ({sweeps:g} direct sweeps / evaluation)" if sweeps else "")
        rows.append([r["model"], str(r["batch"]), label,
                     f"{r['iterations_mean']:g} / {r['iterations_median']:g} / {r['iterations_max']}",
                     str(r["evaluations"]), f"{r['seconds']:.3f}{star}", f"{r['speedup_vs_naive']}x",
                     f"{r['speedup_vs_strongest_sequential']}x", f"{r.get('forward_equivalents') or 'n/a'}",
                     equal])  # fmt: skip
    header = ["model", "batch", "run", "iterations (depth) per sample mean / median / max", "batch done after",
              "wall s", "vs naive sequential", "vs strongest sequential", "work: forward passes / sample",
              "bitwise = sequential"]  # fmt: skip
    other = payload.get("other_models_from")
    measured = f"{', '.join(payload.get('models_measured') or [])} " if other else ""
    text = markdown(header, rows) + measured_on(payload).replace("<sub>Measured", f"<sub>{measured}measured")
    if other:  # rows of models not measured in this run came from an earlier run's file
        text += measured_on({"environment": other}).replace("<sub>Measured", "<sub>the other models: measured")
    return text


def batch_table(results: Path) -> str | None:
    payload = load(results, "sampling-cpu")
    if payload is None or not payload.get("batch_100_vs_100_singles"):
        return None
    rows = [[r["model"], r["run"], f"{r['batch_100_s']:.3f}", f"{r['100_singles_s']:.3f}", f"{r['ratio']:.3f}"]
            for r in payload["batch_100_vs_100_singles"]]  # fmt: skip
    return markdown(["model", "run", "one batch of 100 (s)", "100 requests of 1 (s)", "ratio"], rows)


def gradients_table(results: Path) -> str | None:
    payload = load(results, "gradients-cpu")
    if payload is None:
        return None
    by_config: dict[tuple[int, int, int], dict[str, dict[str, Any]]] = {}
    for r in payload["results"]:
        by_config.setdefault((r["T"], r["H"], r["B"]), {})[r["method"].split(" ")[0]] = r
    rows: Rows = []
    for (t, h, b), methods in sorted(by_config.items()):
        seq, scan, jac = methods.get("sequential"), methods.get("scan"), methods.get("jacobi")

        def cell(r: dict[str, Any] | None) -> str:
            if r is None:
                return "skipped"
            off = r.get("max_abs_diff_vs_float64", r["max_abs_diff"])
            truncated = "" if r.get("exact", True) else f", capped: not certified exact ({off:.1e} from float64)"
            return f"{r['seconds']:.4f} s, depth {r['depth']}{truncated}"

        exact = [r for r in methods.values() if r.get("exact", True)]
        worst = max(float(r["max_abs_diff"]) for r in exact)
        rounding = "n/a"
        if seq is not None and "max_abs_diff_vs_float64" in seq:
            parallel = max(float(r["max_abs_diff_vs_float64"]) for r in exact if r is not seq)
            rounding = f"{seq['max_abs_diff_vs_float64']:.1e} / {parallel:.1e}"
        rows.append([str(t), str(h), str(b), cell(seq), cell(scan),
                     "n/a" if scan is None else f"{scan['speedup_vs_bptt']}x", cell(jac),
                     "n/a" if jac is None else f"{jac['speedup_vs_bptt']}x", f"{worst:.1e}", rounding])  # fmt: skip
    header = ["T", "H", "B", "BPTT (autograd)", "scan", "scan vs BPTT", "Jacobi (to exact or cap)", "Jacobi vs BPTT",
              "max abs diff vs autograd (exact methods)", "vs float64 autograd: BPTT / parallel"]  # fmt: skip
    return markdown(header, rows) + measured_on(payload)


def dense_table(results: Path) -> str | None:
    payload = load(results, "dense-cpu")
    if payload is None:
        return None
    s = payload["summary"]
    lead = (f"{s['images']} test images, {s['unknowns']} unknowns (stem, 18 dense layers, 2 transitions, head): "
            f"logits bitwise exact after {s['exact_mean']:.1f} iterations on average (max {s['exact_max']:.0f}); "
            f"the predicted class settles for good after {s['settle_mean']:.1f} (max {s['settle_max']:.0f}); "
            f"bitwise equal to the sequential forward: {s['bitwise_equal']}.\n\n")  # fmt: skip
    rows: Rows = []
    for r in payload["results"]:
        estimate = r.get("estimated_parallel_speedup")
        rows.append([str(r["batch"]), r["method"], f"{r['tol']:g}", f"{r['iterations']:.1f}", f"{r['seconds']:.4f}",
                     f"{r['speedup_vs_strongest_sequential']}x", "" if estimate is None else f"{estimate}x",
                     f"{r['max_abs_diff']:.1e}"])  # fmt: skip
    header = ["batch", "method", "tol", "iterations (mean)", "wall s", "vs strongest sequential",
              "critical-path estimate", "max abs diff"]  # fmt: skip
    return lead + markdown(header, rows) + measured_on(payload)


def serving_table(results: Path) -> str | None:
    payload = load(results, "serving-cpu")
    if payload is None:
        return None
    tp, cfg = payload["throughput"], payload["config"]

    def added(r: dict[str, Any]) -> str:
        interval = r.get("p50_added_ci95_ms")
        return f"+{r['p50_added_ms']} ms" + (f" (95% CI {interval[0]}-{interval[1]})" if interval else "")

    rounds = f", median of {len(tp['rounds'])} rounds {tp['median_round_ratio']:.0%}" if "rounds" in tp else ""
    rows: Rows = [
        [f"`/sample` throughput, {cfg['model']} {cfg['method']}, batch {tp['batch']}, {tp['clients']} clients",
         f"library {tp['library_samples_per_s']} samples/s", f"server (same batch) {tp['server_samples_per_s']}",
         f"{tp['ratio']:.0%} of the library{rounds}"],
        ["the same, server batching many requests' rows", "", f"{tp['server_default_batching_samples_per_s']}",
         f"{tp['default_batching_ratio']:.0%}"],
    ]  # fmt: skip
    for key, label in (("added_latency_embedded", "embedded"),
                       ("added_latency_redis", "Redis Streams (API + 1 worker process)")):  # fmt: skip
        r = payload[key]
        if "p50_added_ms" in r:
            rows.append([f"p50 added latency, {label}", f"library {r['p50_library_ms']} ms",
                         f"server {r['p50_server_ms']} ms", added(r)])  # fmt: skip
    for mode, r in payload["batching"].items():
        rows.append([f"open loop {cfg['rate_per_s']} req/s, {mode} batching", f"{r['throughput_rps']} req/s answered",
                     f"p50 {r['p50_ms']} / p95 {r['p95_ms']} / p99 {r['p99_ms']} ms",
                     f"{r['errors']} errors of {r['requests']}"])  # fmt: skip
    layouts = payload.get("workers", {}).get("layouts", {})
    one = layouts.get("1 worker", {}).get("samples_per_s")
    for name, r in layouts.items():
        versus = f"{r['samples_per_s'] / one:.0%} of 1 worker" if one else ""
        rows.append([f"Redis, {payload['workers']['clients']} clients of 4 samples: {name}", "",
                     f"{r['samples_per_s']} samples/s", versus])  # fmt: skip
    return markdown(["measurement", "reference", "server", "result"], rows) + measured_on(payload)


def locust_table(results: Path, prefix: str = "locust") -> str | None:
    path = results / f"{prefix}_stats.csv"
    if not path.exists():
        return None
    columns = ("Name", "Request Count", "Failure Count", "50%", "95%", "99%")
    rows = [[*(r[c] for c in columns), f"{float(r['Requests/s']):.1f}"] for r in csv.DictReader(path.open())]
    return markdown(["endpoint", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "req/s"], rows)


def recovery_table(results: Path) -> str | None:
    payload = load(results, "recovery-cpu")
    if payload is None:
        return None
    rows: Rows = [[f"`{name.split()[1]}` job {name.split()[0]} -> stopped", f"{seconds * 1000:.0f} ms", "< 200 ms"]
                  for name, seconds in payload["stops_s"].items()]  # fmt: skip
    r, m = payload["reclaim"], payload["memory"]
    if "answered_s_after_kill" in r:
        rows.append([f"{r['jobs']} jobs of a SIGKILLed worker, all answered ({r['bitwise_equal']} bitwise equal)",
                     f"{r['answered_s_after_kill']} s after the kill", "< 15 s"])  # fmt: skip
    rows.append([f"peak resident, heaviest documented request ({m['request']['model']}, {m['request']['batch']} "
                 f"sequences, {m['request']['method']}, verify)", f"{m['peak_resident_gb']} GB", "< 2 GB"])  # fmt: skip
    return markdown(["measurement", "measured", "target"], rows) + measured_on(payload)


def synthetic_table(results: Path) -> str | None:
    payload = load(results, "synthetic")
    if payload is None:
        return None
    methods = list(dict.fromkeys(r["method"] for r in payload["results"]))
    systems = list(dict.fromkeys(r["system"] for r in payload["results"]))
    cells = {(r["system"], r["method"]): r for r in payload["results"]}
    rows: Rows = []
    for system in systems:
        row = [system]
        for method in methods:
            r = cells.get((system, method))
            row.append("" if r is None else f"{r['evaluations']} ({r['speedup_wall']}x wall)")
        rows.append(row)
    return markdown(["system: evaluations (wall-clock speedup)", *methods], rows) + measured_on(payload)


TABLES: dict[str, tuple[Callable[[Path], str | None], str]] = {
    "models": (models_table, "parafeed train KIND --publish NAME"),
    "sampling": (sampling_table, "python -m benchmarks.sampling"),
    "batch": (batch_table, "python -m benchmarks.sampling"),
    "gradients": (gradients_table, "python -m benchmarks.gradients"),
    "dense": (dense_table, "python -m benchmarks.dense"),
    "serving": (serving_table, "python -m benchmarks.serving"),
    "locust": (locust_table, "python -m loadtests.run"),
    "mixed": (lambda results: locust_table(results, "locust-mixed"), "python -m loadtests.run --scenario mixed"),
    "synthetic": (synthetic_table, "python -m benchmarks.synthetic"),
    "recovery": (recovery_table, "python -m benchmarks.recovery"),
}


def render(text: str, results: Path) -> str:
    for name, (make, command) in TABLES.items():
        pattern = re.compile(rf"(<!-- report:{name} -->\n)(.*?)(<!-- /report:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            continue
        table = make(results) or f"*Not measured yet: run `{command}`.*"
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(3), text)  # noqa: B023 (used at once)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's tables are not up to date")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    updated = render(text, args.results)
    if args.check:
        if updated != text:
            print(f"{args.readme}: result tables differ from {args.results}; run python -m benchmarks.report")
            return 1
        return 0
    args.readme.write_text(updated)
    print(f"updated the result tables in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
