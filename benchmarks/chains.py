"""Chains s_t = f(x_t, s_{t-1}) solved five ways in one run: the sequential loop, Jacobi, Newton (DEER,
``solvers.newton``), diagonal quasi-Newton (quasi-DEER) and two-level MGRIT (``solvers.mgrit``, FCF, coarsening 8).

Per method and problem: iterations, depth (sequential steps on the critical path: the loop T; Jacobi its
iterations; Newton iterations x (1 + ceil(log2 T)), one batched f and one scan each; MGRIT its counted depth),
wall time (best of a few runs when short), max |difference| to the sequential states (Jacobi on the shipped
models: to its predictions), bitwise equality, convergence and cell evaluations (Newton's dense H x H scans cost
O(T H^3 log T) besides, reported as ``scan_flops``). Every solve has a time cap; Newton with dense Jacobians is
skipped where they would not fit in ``memory_bytes``. Newton runs its full iteration cap (patience = cap: no exit
on a stalled residual) and returns the iterate with the smallest residual; quasi-Newton takes the diagonal of the
same closed-form Jacobians.
- shipped models (gru-fmnist, rnn784-fmnist, orthogonal-fmnist: T = 784; rnn-fmnist: T = 100), batch 2 of test
  images, Newton / quasi-Newton / MGRIT / Jacobi at tol = 1e-5 and at tol = 0 (bitwise), with the top Lyapunov
  exponent (QR iteration in float64) and the mean per-step ||J_t||_2 along the true trajectory;
- random float32 tanh recurrences f(x, s) = tanh(W s + u x + b), ||W||_2 = 0.9 (contracting) and 1.2 (transient
  growth), H in {32, 128}, T in {100, 784, 4096, 16384}, batch 1, tol = 1e-5 (Jacobi: 0).
Anchors (published figures, not ours): DEER (Lim et al., ICLR 2024), ParaRNN (Danieli et al., 2025), MGRIT for
GRUs (Moon & Cyr, ICLR 2022), torchbraid / XBraid.

    python -m benchmarks.chains [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.harness import RESULTS, environment, save_figure, write_json
from models.invariance import pad_rows
from models.rnn import RecurrentRegressor
from solvers.mgrit import MGRITConfig, mgriting
from solvers.newton import NewtonResult, newton_chaining

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("sequential", "jacobi", "newton", "quasi-newton", "mgrit")
ANCHORS = {  # published figures, not measured here
    "DEER (Lim et al., ICLR 2024)": "a GRU's forward pass converges in a handful of Newton iterations",
    "ParaRNN (Danieli et al., 2025)": "about 3 Newton iterations",
    "Moon & Cyr (ICLR 2022)": "MGRIT over the sequence length for GRUs, up to 6.5x speedup",
    "torchbraid / XBraid": "MGRIT libraries (layer-parallel / time-parallel)",
}


@dataclass(frozen=True)
class ChainsConfig:
    models: tuple[str, ...] = ("gru-fmnist", "rnn784-fmnist", "orthogonal-fmnist", "rnn-fmnist")
    batch: int = 2
    hidden: tuple[int, ...] = (32, 128)
    lengths: tuple[int, ...] = (100, 784, 4096, 16384)
    norms: tuple[float, ...] = (0.9, 1.2)  # ||W||_2 of the random recurrences
    tol: float = 1e-5
    newton_iterations: int = 20
    quasi_iterations: int = 50
    coarsening: int = 8
    seconds: float = 60.0  # time cap of one solve (shipped models)
    random_seconds: float = 30.0  # time cap of one solve (random recurrences)
    memory_bytes: float = 2e9
    seed: int = 0


@dataclass
class Row:
    problem: str
    T: int
    H: int
    B: int
    method: str
    tol: float | None = None
    iterations: int | None = None
    depth: int | None = None
    seconds: float | None = None
    vs_sequential: float | None = None  # sequential seconds / seconds (> 1: faster)
    max_abs_diff: float | None = None
    exact: bool | None = None
    converged: bool | None = None
    residual: float | None = None
    cell_evaluations: int | None = None
    scan_flops: float | None = None
    note: str = ""


def drive(gen: Generator[Any, None, Any], seconds: float) -> tuple[Any, bool]:
    """Run a solver generator to its result, or stop it after ``seconds``: (result or last yield, timed out)."""
    start, last = time.perf_counter(), None
    try:
        while True:
            last = next(gen)
            if time.perf_counter() - start > seconds:
                gen.close()
                return last, True
    except StopIteration as stop:
        return stop.value, False


def best_of(fn: Callable[[], Any], short: float = 1.0, repeats: int = 2) -> tuple[float, Any]:
    """Wall time of one call, or the best of 1 + ``repeats`` calls when the first took under ``short`` s."""
    times, result = [], None
    for _ in range(1 + repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if times[0] >= short:
            break
    return min(times), result


def loop(f: Step, x: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """The sequential loop over t: states (B, T, H)."""
    out = [s0]
    for t in range(x.shape[1]):
        out.append(f(x[:, t], out[-1]))
    return torch.stack(out[1:], dim=1)


def jacobi_chain(f: Step, x: torch.Tensor, s0: torch.Tensor, seconds: float) -> tuple[torch.Tensor, int, bool, int]:
    """Jacobi on the chain from zeros: f on every state not yet final at once, until the iterate reproduces itself
    bit for bit (or the time cap). (states (B, T, H), iterations, converged, cell evaluations)."""
    batch, length = x.shape
    states, final, iterations, work, start = s0.new_zeros(batch, length, s0.shape[1]), 0, 0, 0, time.perf_counter()
    while final < length and time.perf_counter() - start < seconds:  # states[:, :final] are the sequential ones
        previous = torch.cat([s0[:, None], states[:, :-1]], dim=1)[:, final:]
        new = f(x[:, final:].reshape(-1), previous.reshape(-1, s0.shape[1])).reshape(previous.shape)
        iterations, work = iterations + 1, work + previous.shape[0] * previous.shape[1]
        same = (new == states[:, final:]).flatten(2).all(dim=2).all(dim=0)
        states[:, final:] = new
        if bool(same.all()):
            return states, iterations, True, work
        final += int((~same).nonzero()[0]) + 1  # the unchanged prefix was exact; one more step is now
    return states, iterations, final == length, work


@dataclass(frozen=True)
class Chain:
    """One problem: f, inputs x (B, T), s0 (B, H), the sequential states (B, T, H), df/ds, a box for the states."""

    base: Row
    f: Step
    x: torch.Tensor
    s0: torch.Tensor
    reference: torch.Tensor
    jacobian: Step
    bounds: tuple[float, float]
    seconds: float  # time cap of one solve


def solve_row(chain: Chain, method: str, tol: float, cfg: ChainsConfig) -> Row:
    """One Newton, quasi-Newton or MGRIT solve (time-capped), compared with the sequential states."""
    (batch, length), hidden, f = chain.x.shape, chain.s0.shape[1], chain.f
    levels, states = max(1, math.ceil(math.log2(length))), None
    row = replace(chain.base, method=method, tol=tol, iterations=None, depth=None, cell_evaluations=None)
    if method == "newton" and 4 * batch * length * hidden**2 * 4 > cfg.memory_bytes:  # ~4 copies in the scan
        row.note = f"skipped: dense Jacobians need ~{4 * batch * length * hidden**2 * 4 / 1e9:.1f} GB"
        return row
    if method == "mgrit":

        def step(n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # n (P,), u (P, B, H)
            return f(chain.x[:, n].T.reshape(-1), u.reshape(-1, hidden)).reshape(u.shape)

        config = MGRITConfig(coarsening=cfg.coarsening, levels=2, relax="FCF", tol=tol)
        took, (got, capped) = best_of(lambda: drive(mgriting(step, chain.s0, length, config), chain.seconds))
        states = got.states.transpose(0, 1)[:, 1:]
        row.depth, row.cell_evaluations = got.depth, (got.fine_evaluations + got.coarse_evaluations) * batch
    else:
        diagonal = method == "quasi-newton"
        cap = cfg.quasi_iterations if diagonal else cfg.newton_iterations  # patience = cap: no early stall exit
        solver = partial(newton_chaining, f, chain.x, chain.s0, cap, tol, diagonal, chain.jacobian, chain.bounds, cap)
        took, (got, capped) = best_of(lambda: drive(solver(), chain.seconds))
        states = got.states if isinstance(got, NewtonResult) else None  # else progress only: stopped by the cap
        row.depth, row.cell_evaluations = got.iterations * (1 + levels), (got.iterations + 1) * batch * length
        row.scan_flops = got.iterations * batch * (length / 2) * levels * (3 * hidden if diagonal else 2 * hidden**3)
    row.iterations, row.residual, row.seconds = got.iterations, got.residual, round(took, 4)
    row.converged = bool(getattr(got, "converged", False)) and not capped
    row.note = f"time cap {chain.seconds:.0f} s" if capped else ""
    if states is not None:
        row.max_abs_diff = float((states - chain.reference).abs().max())
        row.exact = bool(torch.equal(states, chain.reference))
    return row


def iterative_rows(chain: Chain, cfg: ChainsConfig, tols: tuple[float, ...]) -> list[Row]:
    """Newton, quasi-Newton and MGRIT at each tol; tol = 0 is rerun only where the first tol converged short of
    exact (otherwise the tol = 0 solve stops on the same iterate: same updates, same cap or stall)."""
    rows = []
    for method in ("newton", "quasi-newton", "mgrit"):
        rows.append(first := solve_row(chain, method, tols[0], cfg))
        for tol in tols[1:]:
            if first.converged and not first.exact:
                rows.append(solve_row(chain, method, tol, cfg))
            else:
                rows.append(replace(first, tol=tol, converged=bool(first.exact), note=first.note or "same solve"))
    return rows


def lyapunov(model: RecurrentRegressor, x: torch.Tensor, states: torch.Tensor) -> dict[str, float]:
    """Top Lyapunov exponent (QR iteration, float64, mean of log|R[0,0]| per step) and per-step ||J_t||_2 along the
    sequential trajectory h_0..h_{T-1}, averaged over the rows."""
    with torch.no_grad():
        jac = model.step_jacobian(x, states[:, :-1]).double()  # (B, T, H, H)
    norms = torch.linalg.matrix_norm(jac, ord=2)
    q = torch.eye(jac.shape[-1], dtype=torch.float64).expand(jac.shape[0], -1, -1)
    logs = torch.zeros(jac.shape[0], dtype=torch.float64)
    for t in range(jac.shape[1]):
        q, r = torch.linalg.qr(jac[:, t] @ q)
        logs += r[:, 0, 0].abs().log()
    return {"top_lyapunov": round(float(logs.mean()) / jac.shape[1], 4), "mean_norm": round(float(norms.mean()), 3),
            "max_norm": round(float(norms.max()), 3),
            "share_norm_above_1": round(float((norms > 1).double().mean()), 3)}  # fmt: skip


def shipped(cfg: ChainsConfig, progress: tqdm) -> tuple[list[Row], dict[str, Any]]:
    from app.settings import Settings
    from models.registry import load_model
    from samplers.families.recurrent import forward_solve

    engine, rows, dynamics = Settings().engine(), [], {}
    for name in cfg.models:
        model = cast(RecurrentRegressor, load_model(name).eval())
        x = engine.test_inputs(name, cfg.batch, cfg.seed).float()
        batch, length, hidden = *x.shape, model.config.hidden_size
        with torch.no_grad():
            base = Row(name, length, hidden, batch, "sequential", 0.0, 1, length, cell_evaluations=batch * length)
            seq_s, states = best_of(lambda: model.hidden_states(x), short=10.0)  # noqa: B023
            reference, predictions = states[:, 1:], model.predict(states)
            rows.append(replace(base, seconds=round(seq_s, 4), max_abs_diff=0.0, exact=True, converged=True))
            for tol in (cfg.tol, 0.0):
                took, (pred, its, conv, res) = best_of(lambda: forward_solve(model, x, "jacobi", tol))  # noqa: B023
                rows.append(replace(base, method="jacobi", tol=tol, iterations=int(its.max()), depth=int(its.max()),
                                    seconds=round(took, 4), max_abs_diff=float((pred - predictions).abs().max()),
                                    exact=bool(torch.equal(pred, predictions)), converged=conv, residual=res,
                                    cell_evaluations=None, note="diff of predictions"))  # fmt: skip
            progress.update()
            chain = Chain(base, model.cell, x, x.new_zeros(batch, hidden), reference, model.step_jacobian,
                          model.state_bounds, cfg.seconds)  # fmt: skip
            rows += iterative_rows(chain, cfg, (cfg.tol, 0.0))
        dynamics[name] = lyapunov(model, x, states)
        progress.update()
    return rows, dynamics


def random_chain(hidden: int, norm: float, seed: int) -> tuple[Step, Step]:
    """f(x, s) = tanh(W s + u x + b), ||W||_2 = ``norm``, and its Jacobian (1 - f^2)[:, :, None] * W."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(hidden, hidden, generator=g)
    w *= norm / torch.linalg.matrix_norm(w, ord=2)
    u, b = torch.randn(hidden, generator=g), 0.1 * torch.randn(hidden, generator=g)

    def f(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # x (N,), s (N, H); rows padded: batch invariant
        return torch.tanh(F.linear(pad_rows(s), w) + pad_rows(x)[:, None] * u + b)[: s.shape[0]]

    return f, lambda x, s: (1 - f(x, s) ** 2)[:, :, None] * w


def random_rows(cfg: ChainsConfig, progress: tqdm) -> list[Row]:
    rows, cap = [], cfg.random_seconds
    for norm, hidden, length in itertools.product(cfg.norms, cfg.hidden, cfg.lengths):
        f, jacobian = random_chain(hidden, norm, cfg.seed)
        x, s0 = torch.randn(1, length, generator=torch.Generator().manual_seed(cfg.seed)), torch.zeros(1, hidden)
        base = Row(f"tanh ||W||={norm}", length, hidden, 1, "sequential", 0.0, 1, length, cell_evaluations=length)
        with torch.no_grad():
            seq_s, reference = best_of(lambda: loop(f, x, s0))  # noqa: B023
            rows.append(replace(base, seconds=round(seq_s, 4), max_abs_diff=0.0, exact=True, converged=True))
            took, (states, its, conv, work) = best_of(lambda: jacobi_chain(f, x, s0, cap))  # noqa: B023
            rows.append(replace(base, method="jacobi", iterations=its, depth=its, seconds=round(took, 4),
                                max_abs_diff=float((states - reference).abs().max()), converged=conv,
                                exact=bool(torch.equal(states, reference)), cell_evaluations=work,
                                note="" if conv else f"time cap {cap:.0f} s"))  # fmt: skip
            rows += iterative_rows(Chain(base, f, x, s0, reference, jacobian, (-1.0, 1.0), cap), cfg, (cfg.tol,))
        progress.update()
    return rows


def plot(payload: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, tol = payload["results"], payload["config"]["tol"]
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    random = [r for r in rows if r["problem"].startswith("tanh") and r["method"] != "sequential" and r["iterations"]]
    for key in dict.fromkeys((r["method"], r["problem"], r["H"]) for r in random):
        picked = [r for r in random if (r["method"], r["problem"], r["H"]) == key]
        axes[0].plot([r["T"] for r in picked], [r["iterations"] for r in picked], "-" if key[2] < 100 else "--",
                     marker="o" if "0.9" in key[1] else "s", color=colors[key[0]],
                     label=f"{key[0]} {key[1][5:]} H={key[2]}")  # fmt: skip
    axes[0].set(xscale="log", yscale="log", xlabel="T", ylabel=f"iterations (Jacobi: tol 0; others: tol {tol})",
                title="(a) random tanh recurrences f = tanh(W s + u x + b), batch 1")  # fmt: skip
    axes[0].set_ylim(0.7, 1e6)  # room for the legend above the curves
    axes[0].legend(fontsize=5.5, ncol=2, loc="upper left")
    models = list(dict.fromkeys(r["problem"] for r in rows if not r["problem"].startswith("tanh")))
    width = 0.8 / (len(METHODS) - 1)
    for i, name in enumerate(models):
        at = {r["method"]: r for r in rows if r["problem"] == name and r["seconds"]
              and (r["tol"] == tol or r["method"] == "sequential")}  # fmt: skip
        for k, method in enumerate(m for m in METHODS[1:] if m in at):
            ratio, spot = at[method]["seconds"] / at["sequential"]["seconds"], i + (k - 1.5) * width
            axes[1].bar(spot, ratio, width, color=colors[method], label=method if i == 0 else None)
            label = f"{at[method]['iterations']}{'' if at[method]['converged'] else '*'}"
            axes[1].annotate(label, (spot, ratio), ha="center", va="bottom", fontsize=7)
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    lengths = [next(r["T"] for r in rows if r["problem"] == m) for m in models]
    axes[1].set_xticks(range(len(models)), [f"{m}\nT={t}" for m, t in zip(models, lengths, strict=True)], fontsize=8)
    axes[1].set(yscale="log", ylabel="wall time / sequential loop",
                title=f"(b) shipped models, batch 2, tol {tol}\nbar labels: iterations (*: not converged)")  # fmt: skip
    axes[1].legend(fontsize=7)
    fig.suptitle("chains s_t = f(x_t, s_{t-1}) on this CPU: Jacobi, Newton (DEER), quasi-Newton, MGRIT")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T in {100, 784}, H = 32, gru-fmnist and rnn-fmnist")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cfg = ChainsConfig()
    if args.quick:
        cfg = replace(cfg, models=("gru-fmnist", "rnn-fmnist"), lengths=(100, 784), hidden=(32,))
    start, load = time.perf_counter(), os.getloadavg()
    progress = tqdm(total=2 * len(cfg.models) + len(cfg.norms) * len(cfg.hidden) * len(cfg.lengths), unit="problem")
    rows, dynamics = shipped(cfg, progress)
    rows += random_rows(cfg, progress)
    progress.close()
    for r in rows:
        seq = next(s for s in rows if (s.problem, s.T, s.H, s.method) == (r.problem, r.T, r.H, "sequential"))
        r.vs_sequential = round(seq.seconds / r.seconds, 4) if r.seconds and seq.seconds else None
    suffix = "-quick" if args.quick else ""
    payload: dict[str, Any] = {
        "benchmark": "chains", "config": asdict(cfg), "environment": environment("cpu"),
        "load_average_before_after": [round(load[0], 2), round(os.getloadavg()[0], 2)],
        "total_seconds": round(time.perf_counter() - start, 1), "results": [asdict(r) for r in rows],
        "dynamics": dynamics, "anchors": ANCHORS,
    }  # fmt: skip
    path = write_json(f"chains{suffix}-cpu", payload, args.out)
    print(f"wrote {path} and {plot(payload, args.out / f'chains{suffix}-cpu.png')}")
    for r in rows:
        print({k: v for k, v in asdict(r).items() if v not in (None, "")})
    print(dynamics, f"total {payload['total_seconds']} s")
    return payload


if __name__ == "__main__":
    main()
