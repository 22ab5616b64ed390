"""Sampling benchmark: every method against the strongest sequential baseline, in one run, on one machine.

For each shipped sampler (MADE, PixelCNN++) and batch size it measures: iterations per sample (mean / median /
max, the confirming pass included), evaluations until the whole batch is done, wall time, speedup against the
naive sequential sampler and against the strongest one we have, and the fraction of samples bitwise equal to the
sequential sample with the same noise. Every run goes through ``solvers.solve``: baselines are system variants.

Baselines: MADE "sequential_naive" (784 full passes: the reference), "sequential, cropped outputs" (layers 1-2
full, only logit t at step t) and "sequential" (degree order, each hidden unit once, certified by one forward:
the strongest, ``models.made_degrees``). PixelCNN++ "sequential, plain forward" (the textbook sampler, one
whole-image pass per pixel), "sequential_naive, banded (no cache)", "sequential_naive (band-cached)" (the
reference: a band of rows per pixel) and "sequential" (incremental, each layer position once, certified by one
evaluation of the reference map: the strongest, ``models.pixelcnnpp_incremental``). Every row also gives the
arithmetic per sample (multiply-adds, and in forward-pass equivalents) beside the depth (evaluations), so work
and depth can be read apart.

    python -m benchmarks.sampling [--quick] [--out benchmarks/results] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.baselines import CroppedMade, PlainPixelCNNpp, UncachedPixelCNNpp
from benchmarks.harness import RESULTS, environment, write_json
from models import data as datasets
from models.pixelcnnpp_bands import BAND
from samplers.auto import Choice
from samplers.auto import record as record_auto
from samplers.engine import Engine
from samplers.sampling import NAIVE
from samplers.system import SamplingSystem
from samplers.work import SystemSolve, solve_system
from solvers import FixedPointBatch, solve


@dataclass(frozen=True)
class SamplingConfig:
    batches: tuple[int, ...] = (1, 16, 100)
    seed: int = 0
    made_repeats: int = 3  # MADE runs are short: median of 3
    pixel_repeats: int = 1  # PixelCNN++ runs take minutes: one timed run after a warm-up at batch 1
    plain_steps: int = 784  # the plain PixelCNN++ sampler below batch 100: time this many steps (all of them)
    plain_steps_batch100: int = 98
    snapshot_iterations: tuple[int, ...] = (1, 4, 8, 16, 32, 64, 392)
    device: str = "cpu"
    pixel_batches: tuple[int, ...] = field(default=(1, 16, 100))


@dataclass
class Run:
    label: str
    method: str  # sampler method passed to solve_system
    system: SamplingSystem
    block_size: int | None = None
    x0: str = "zeros"  # initial guess: zeros | marginal | mode (MADE only)
    baseline: bool = False
    max_iterations: int | None = None  # timed prefix of a long baseline, extrapolated to all steps
    synchronous: bool = False  # batch-synchronous: every row evaluated until the slowest converges (paper's code)


def made_runs(engine: Engine, batch: int) -> list[Run]:
    model = engine.model("made-fmnist")
    plain = engine.sampling_system("made-fmnist")
    cropped = CroppedMade(model, "made-fmnist")
    return [
        Run("sequential_naive", "sequential_naive", plain, baseline=True),
        Run("sequential, cropped outputs", "sequential_naive", cropped, baseline=True),
        Run("sequential (degree order, certified)", "sequential", plain, baseline=True),
        Run("jacobi_window (4-row window)", "jacobi_window", plain, block_size=4 * 28),
        Run("jacobi_window (8-row window)", "jacobi_window", plain, block_size=8 * 28),
        Run("jacobi", "jacobi", plain),
        Run("jacobi, batch-synchronous", "jacobi", plain, synchronous=True),
        Run("jacobi, x0 = marginal", "jacobi", plain, x0="marginal"),
        Run("jacobi, x0 = mode", "jacobi", plain, x0="mode"),
        Run("jacobi_split", "jacobi_split", plain),
        Run("jacobi_gs (row blocks)", "jacobi_gs", plain, block_size=28),
        Run("gs_jacobi (15-row window)", "gs_jacobi", plain, block_size=15 * 28),
    ]


def pixel_runs(engine: Engine, batch: int, cfg: SamplingConfig) -> list[Run]:
    model = engine.model("pixelcnnpp-fmnist")
    cached = engine.sampling_system("pixelcnnpp-fmnist")
    banded = UncachedPixelCNNpp(model, "pixelcnnpp-fmnist")
    plain = PlainPixelCNNpp(model, "pixelcnnpp-fmnist")
    steps = cfg.plain_steps_batch100 if batch >= 100 else cfg.plain_steps
    runs = [
        Run("sequential, plain forward", NAIVE, plain, baseline=True, max_iterations=min(steps, plain.unknowns)),
        Run(BAND_CACHED, NAIVE, cached, baseline=True),
        Run("sequential (incremental, certified)", "sequential", cached, baseline=True),
        Run("jacobi_window (4-row window)", "jacobi_window", cached, block_size=4 * 28),
        Run("jacobi_window (8-row window)", "jacobi_window", cached, block_size=8 * 28),
        Run("jacobi (cached)", "jacobi", cached),
        Run("gs_jacobi (2-row window)", "gs_jacobi", cached, block_size=2 * 28),
        Run("gs_jacobi (4-row window)", "gs_jacobi", cached, block_size=4 * 28),
        Run("gs_jacobi (8-row window)", "gs_jacobi", cached, block_size=8 * 28),
        Run("jacobi_gs (row blocks)", "jacobi_gs", cached, block_size=28),
    ]
    if batch == 16:  # what the caches save, measured once
        runs.insert(2, Run("sequential_naive, banded (no cache)", NAIVE, banded, baseline=True))
        runs.append(Run("jacobi, banded (no cache)", "jacobi", banded))
    return runs


BAND_CACHED = "sequential_naive (band-cached)"


def initial_guess(run: Run, system: SamplingSystem, noise: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    if run.x0 == "marginal":
        return (noise < marginal).to(system.dtype)
    if run.x0 == "mode":
        return (marginal > 0.5).to(system.dtype).expand(noise.shape[0], -1).clone()
    return system.initial_guess(noise)


def measure(run: Run, noise: torch.Tensor, x0: torch.Tensor, repeats: int, track: bool) -> dict[str, Any]:
    """Solve (repeats times), return timings, counts and, if asked, per-iteration statistics."""
    fraction_final: list[float] = []
    snapshots: dict[int, list[int]] = {}

    def callback(batch: FixedPointBatch) -> None:
        fraction_final.append(float(batch.final.double().mean() / batch.length))
        k = len(fraction_final)  # evaluations so far
        if k in SNAPSHOTS:
            snapshots[k] = run.system.decode(batch.x[:1])[0].flatten().tolist()

    def once(callback: Any = None) -> SystemSolve:
        if run.synchronous:  # a step without `rows`: the solver must evaluate the whole batch every time
            plan = run.system.plan(run.method)
            result = solve(lambda x: plan.evaluate(x, noise), x0.clone(), plan.solver_method, callback=callback)
            return SystemSolve(result, run.system.decode(result.x))
        return solve_system(run.system, noise, run.method, run.block_size, run.max_iterations, x0.clone(), callback)

    if run.method in ("sequential", "jacobi_window"):  # fast paths build their layout and pooled buffers once
        once()
    sweeps_before = getattr(run.system, "direct_sweeps", 0)
    macs_before = getattr(run.system, "fast_macs", 0)
    bands_before = getattr(run.system, "bands_done", 0)
    times, solved = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        solved = once()
        if noise.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert solved is not None
    sweeps = (getattr(run.system, "direct_sweeps", 0) - sweeps_before) / repeats
    fast_macs = (getattr(run.system, "fast_macs", 0) - macs_before) / repeats
    bands = (getattr(run.system, "bands_done", 0) - bands_before) / repeats
    if track:  # statistics from an extra, untimed solve
        once(callback)
        done = int(solved.result.iterations[0])  # the sample's own last evaluation: later frames repeat it
        snapshots = {k: v for k, v in snapshots.items() if k < done}
        snapshots[done] = run.system.decode(solved.result.x[:1])[0].flatten().tolist()
    return {"seconds": sorted(times)[len(times) // 2], "solved": solved, "fraction_final": fraction_final,
            "snapshots": snapshots, "direct_sweeps": sweeps, "fast_macs": fast_macs, "bands": bands}  # fmt: skip


def full_seconds(out: dict[str, Any], steps: int) -> tuple[float, bool]:
    """(seconds for the whole solve, whether it ran whole): a baseline timed over a prefix of its ``steps``
    sequential steps (``max_iterations``) is extrapolated linearly; every step of it costs the same."""
    result = out["solved"].result
    done = int(result.iterations.max()) if result.iterations.numel() else steps
    complete = done >= steps or bool(result.converged.all())
    return (out["seconds"] if complete else out["seconds"] * steps / max(done, 1)), complete


SNAPSHOTS: set[int] = set()
TRACKED = {
    "sequential_naive",
    "jacobi",
    "jacobi_split",
    BAND_CACHED,
    "jacobi (cached)",
    "gs_jacobi (4-row window)",
}


def benchmark_model(engine: Engine, name: str, cfg: SamplingConfig, progress: tqdm) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    train = datasets.binarize(datasets.load_split("train").images) if name.startswith("made") else None
    marginal = train.mean(0).to(engine.device) if train is not None else torch.zeros(0)
    batches = cfg.batches if name.startswith("made") else cfg.pixel_batches
    for batch in batches:
        runs = made_runs(engine, batch) if name.startswith("made") else pixel_runs(engine, batch, cfg)
        system = runs[0].system
        noise = system.draw_noise(cfg.seed, range(batch))
        repeats = cfg.made_repeats if name.startswith("made") else cfg.pixel_repeats
        with torch.inference_mode():
            solve_system(runs[-1].system, noise[:1], runs[-1].method, runs[-1].block_size)  # warm-up
            reference = None
            results = []
            for run in runs:
                x0 = initial_guess(run, run.system, noise, marginal)
                track = batch == 16 and run.label in TRACKED
                out = measure(run, noise, x0, repeats, track)
                solved = out["solved"]
                if run.label in ("sequential_naive", BAND_CACHED):
                    reference = solved.samples
                results.append((run, out))
                progress.update()
            assert reference is not None
            steps = system.unknowns
            naive = next(full_seconds(out, steps)[0] for run, out in results if run.baseline)
            strongest = min(full_seconds(out, steps)[0] for run, out in results if run.baseline)
            for run, out in results:
                solved = out["solved"]
                it = solved.result.iterations.double()
                seconds, complete = full_seconds(out, steps)
                macs = work_per_sample(run, out, it, steps)
                equal = (solved.samples == reference).flatten(1).all(1).double().mean().item() if complete else None
                rows.append({
                    "model": name, "batch": batch, "run": run.label, "method": run.method,
                    "block_size": run.block_size, "x0": run.x0, "baseline": run.baseline,
                    "iterations_mean": round(it.mean().item(), 2), "iterations_median": it.median().item(),
                    "iterations_max": int(it.max()), "evaluations": solved.result.evaluations,
                    "seconds": round(seconds, 4), "extrapolated": not complete,
                    "speedup_vs_naive": round(naive / seconds, 2),
                    "speedup_vs_strongest_sequential": round(strongest / seconds, 2),
                    "macs_per_sample": macs, "forward_equivalents": round(macs / forward_macs(run.system), 2)
                    if macs else None,
                    "equal_fraction": equal, "converged": bool(solved.result.converged.all()) if complete else None,
                    "iterations": solved.result.iterations.tolist(),
                    "fraction_final": out["fraction_final"], "snapshots": out["snapshots"],
                    # jacobi_split only: sequential direct-path sweeps inside each evaluation (its extra depth)
                    "direct_sweeps_per_evaluation": round(out["direct_sweeps"] / solved.result.evaluations, 1)
                    if out["direct_sweeps"] else None,
                })  # fmt: skip
    return rows


def forward_macs(system: SamplingSystem) -> int:
    """Multiply-adds of one reference evaluation of one row (MADE: the dense masked forward with direct weights;
    PixelCNN++: every layer position once)."""
    layout = getattr(system, "layout", None)
    if layout is not None:
        return int(layout().macs())
    model = getattr(system, "model", None)
    if model is None or not hasattr(model, "layers"):
        return 0
    direct = model.direct.weight.numel() if getattr(model, "direct", None) is not None else 0
    return int(sum(layer.weight.numel() for layer in model.layers) + direct)


def work_per_sample(run: Run, out: dict[str, Any], iterations: torch.Tensor, steps: int) -> int | None:
    """Multiply-adds per sample (None where not counted): what a fast path counted (``fast_macs``) plus its
    reference evaluations; PixelCNN++'s banded map counts the bands it computed (a band is 1/7 of a forward,
    its context rows not counted); otherwise evaluations x one forward. Cropped MADE: hidden layers in full, one
    output row per step."""
    forward = forward_macs(run.system)
    if not forward:
        return None
    solved = out["solved"]
    rows = solved.result.x.shape[0]
    if out["bands"]:  # PixelCNN++ banded evaluations, counted where they ran
        bands = run.system.size // BAND  # type: ignore[attr-defined]
        return int(out["fast_macs"] + forward * out["bands"] / rows / bands)
    if solved.certificate is not None:  # a fast path: what it counted per row, then its certificate evaluations
        return int(out["fast_macs"] + forward * float(solved.certificate.double().mean()))
    if "cropped" in run.label:
        model = run.system.model  # type: ignore[attr-defined]
        hidden = sum(layer.weight.numel() for layer in model.layers[:-1])
        return int(steps * (hidden + model.layers[-1].weight.shape[1] + steps))
    if run.synchronous:
        return int(forward * int(out["solved"].result.evaluations))
    return int(forward * float(iterations.mean()))


def batch_vs_singles(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and run: one batch of 100 against 100 requests of one sample (batch-1 time x 100)."""
    out = []
    for r in rows:
        if r["batch"] != 100:
            continue
        single = next((s for s in rows if (s["model"], s["run"], s["batch"]) == (r["model"], r["run"], 1)), None)
        if single is not None:
            singles = 100 * single["seconds"]
            out.append({"model": r["model"], "run": r["run"], "batch_100_s": r["seconds"],
                        "100_singles_s": round(singles, 4), "ratio": round(r["seconds"] / singles, 3)})  # fmt: skip
    return out


def pick_auto(rows: list[dict[str, Any]]) -> dict[str, Choice]:
    """Per family: the exact, API-reachable method with the least total time over the measured batch sizes, and
    the fastest one at each batch size (``auto`` serves a request the choice of the largest size <= its own)."""
    choices: dict[str, Choice] = {}
    for family, model in (("made", "made-fmnist"), ("pixelcnnpp", "pixelcnnpp-fmnist")):
        totals: dict[Choice, float] = {}
        by_size: dict[int, tuple[float, Choice]] = {}
        for r in rows:
            default_variant = r["x0"] == "zeros" and not any(
                w in r["run"] for w in ("banded", "plain", "cropped", "synchronous")
            )
            if r["model"] == model and default_variant and r["equal_fraction"] == 1.0:
                sized = r["method"] in ("gs_jacobi", "jacobi_window", "jacobi_gs")
                key = Choice(r["method"], r["block_size"] if sized else None)
                totals[key] = totals.get(key, 0.0) + r["seconds"]
                if r["batch"] not in by_size or r["seconds"] < by_size[r["batch"]][0]:
                    by_size[r["batch"]] = (r["seconds"], key)
        if totals:
            best = min(totals, key=lambda k: totals[k])
            sizes = tuple(sorted((size, choice) for size, (_, choice) in by_size.items()))
            choices[family] = Choice(best.method, best.block_size, sizes)
    return choices


def merged(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """These rows, and the rows of models not measured in this run from the results file already there (their
    ``environment`` is that of their own run: see ``other_runs``)."""
    if not path.exists():
        return rows
    measured = {r["model"] for r in rows}
    kept = [r for r in json.loads(path.read_text())["results"] if r["model"] not in measured]
    return [*kept, *rows]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | batch | run | iterations mean / median / max | batch done | wall s | vs naive"
        " | vs strongest seq | forward passes of work / sample | bitwise equal |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        equal = "n/a" if r["equal_fraction"] is None else f"{r['equal_fraction']:.0%}"
        star = " (extrapolated)" if r["extrapolated"] else ""
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['run']} | {r['iterations_mean']} / {r['iterations_median']:.0f} / "
            f"{r['iterations_max']} | {r['evaluations']} | {r['seconds']:.3f}{star} | {r['speedup_vs_naive']}x | "
            f"{r['speedup_vs_strongest_sequential']}x | {r.get('forward_equivalents') or 'n/a'} | {equal} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 16, PixelCNN++ at batch 1 only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=["made-fmnist", "pixelcnnpp-fmnist"])
    parser.add_argument("--no-auto", action="store_true", help="do not record the fastest methods for 'auto'")
    args = parser.parse_args(argv)
    cfg = SamplingConfig(device=args.device)
    if args.quick:
        cfg = SamplingConfig(batches=(1, 16), pixel_batches=(1,), made_repeats=1, device=args.device)
    SNAPSHOTS.update(cfg.snapshot_iterations)
    engine = Engine(args.device)
    total = sum(len(made_runs(engine, b)) if m.startswith("made") else len(pixel_runs(engine, b, cfg))
                for m in args.models for b in (cfg.batches if m.startswith("made") else cfg.pixel_batches))  # fmt: skip
    progress = tqdm(total=total, desc="sampling", unit="run")
    rows = [row for name in args.models for row in benchmark_model(engine, name, cfg, progress)]
    progress.close()
    env = environment(str(engine.device))
    suffix = "-quick" if args.quick else ""
    previous = args.out / f"sampling{suffix}-{engine.device.type}.json"
    other_runs = json.loads(previous.read_text()).get("environment") if previous.exists() else None
    rows = merged(rows, previous)
    payload = {"benchmark": "sampling", "config": asdict(cfg), "environment": env, "results": rows,
               "models_measured": args.models, "other_models_from": other_runs,
               "batch_100_vs_100_singles": batch_vs_singles(rows)}  # fmt: skip
    path = write_json(f"sampling{suffix}-{engine.device.type}", payload, args.out)
    from benchmarks.sampling_plots import plot_all

    for picture in plot_all(payload, args.out, f"sampling{suffix}-{engine.device.type}"):
        print(f"wrote {picture}")
    if not (args.quick or args.no_auto):
        record_auto(pick_auto(rows), engine.device.type)
    print(table(rows))
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
