"""Multigrid reduction in time (MGRIT) for chains u_{n+1} = Phi_n(u_n), n = 0..N-1, u_0 given.

The chain is a lower block-bidiagonal nonlinear system in u_1..u_N. MGRIT (Falgout et al., SIAM J. Sci. Comput.
2014; applied to training runs by Schroder, arXiv 1708.02276) splits the points into C-points (every m-th) and
F-points and iterates:
  - relaxation: F (propagate u from each C-point through its interval's m-1 F-points; the intervals in parallel),
    or FCF (F, then C: each C-point from the F-point before it, then F again);
  - coarse-grid correction (FAS): the coarse chain v_{j+1} = Phi^c_j(v_j) between C-points, where the coarse step
    is the caller's cheap propagator Psi_j made consistent with the fine one at the current iterate w,
        Phi^c_j(v) = F_j + (Psi_j(v) - Psi_j(w_j)),   F_j = the fine propagation into C-point j+1 from w,
    solved sequentially (two levels: parareal with F-relaxation is this case) or by the same cycle recursively
    (multilevel V-cycles, coarsening by m on every level);
  - the corrected C-points are injected and F-relaxed.

Finite termination, bit for bit: when v_j equals w_j bitwise, Psi_j(v) - Psi_j(w_j) is exactly 0 and the coarse
step returns F_j unrounded, so every cycle extends the exact prefix by at least one coarse interval (F-relaxation:
after k cycles the first k intervals are the serial answer) and at most ceil(N/m) + 1 cycles reach the sequential
trajectory (for a ``step`` that is batch invariant: a row computes the same bits whichever points share a call,
and a coarse step with finite values: an overflow to inf makes the correction NaN).
The stopping test is the certificate F(u) = u: after relaxation the residual max |Phi_{c-1}(u_{c-1}) - u_c| over
the C-points is 0 exactly when u is the sequential trajectory (``exact``); with ``tol`` > 0 the solve stops at
that residual and reports it.

Depth (sequential step evaluations on the critical path) and work (step rows evaluated) are counted as it runs:
one vectorized call of a level's step is one unit of depth, whatever it spans.

Shapes: u0 (B, *S), B independent rows; states (N+1, B, *S) = u_0..u_N. ``step(n, u)``: n (P,) long step
indices, u (P, B, *S) -> u_{n+1} (P, B, *S). ``coarse(start, stop, u)``: start, stop (P,) long fine indices, u
(P, B, *S) -> an approximation of the fine steps start..stop-1 applied to u (P, B, *S).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch

from solvers.pieces import drain

ChainStep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Coarse = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
RELAXATIONS = ("F", "FCF")


@dataclass(frozen=True)
class MGRITConfig:
    coarsening: int = 4  # m: fine steps per coarse step, on every level
    levels: int = 2  # 2: two-level (coarse chain solved sequentially); more: V-cycles down to the coarsest level
    relax: str = "FCF"  # "F" or "FCF"
    max_iterations: int | None = None  # None: enough for finite termination, ceil(N / m) + 1
    tol: float = 0.0  # 0: stop when the trajectory reproduces itself bit for bit; > 0: on residual <= tol

    def __post_init__(self) -> None:
        if self.coarsening < 2:
            raise ValueError(f"coarsening must be at least 2; got {self.coarsening}")
        if self.levels < 2:
            raise ValueError(f"levels must be at least 2; got {self.levels}")
        if self.relax not in RELAXATIONS:
            raise ValueError(f"relax must be one of {RELAXATIONS}; got {self.relax!r}")

    def cycle_cap(self, steps: int) -> int:
        """Cycles before the solve stops unconverged: ``max_iterations``, else finite termination's bound."""
        return self.max_iterations if self.max_iterations is not None else math.ceil(steps / self.coarsening) + 1


@dataclass
class MGRITResult:
    states: torch.Tensor  # (N+1, B, *S): u_0..u_N
    iterations: int  # cycles with a coarse-grid correction
    converged: bool  # stopped on exact agreement or tol, not on max_iterations
    exact: bool  # residual 0: F(u) = u bit for bit
    residual: float  # max over C-points and rows of |Phi(u_{c-1}) - u_c| after the last relaxation
    residuals: list[float] = field(default_factory=list)  # that residual before each cycle, then at the end
    row_iterations: list[int] = field(default_factory=list)  # per row: cycles before its residual was (<= tol) 0
    depth: int = 0  # vectorized step calls on the critical path, every level
    fine_evaluations: int = 0  # rows of the fine step evaluated (times B)
    coarse_evaluations: int = 0  # rows of the coarse propagator evaluated (times B)

    @property
    def factors(self) -> list[float]:
        """Convergence factor per cycle: residual after / residual before (0 once exact)."""
        r = self.residuals
        return [r[k + 1] / r[k] if r[k] > 0 else 0.0 for k in range(len(r) - 1)]


def last_step_coarse(step: ChainStep) -> Coarse:
    """The default coarse propagator: the fine step of the interval's last index, applied once."""
    return lambda start, stop, u: step(stop - 1, u)


class _Counter:
    def __init__(self) -> None:
        self.depth = self.fine = self.coarse = 0


@dataclass
class _Level:
    """One level's chain: u_{i+1} = step(i, u_i), i < count; its points span ``span`` fine steps each."""

    step: ChainStep
    count: int
    span: int
    fine: bool  # level 0: ``step`` is the caller's

    def points(self, m: int) -> torch.Tensor:
        """C-point indices (J+1,): 0, m, 2m, ..., and the last point."""
        c = [*list(range(0, self.count, m)), self.count]
        return torch.tensor(c, dtype=torch.long)


def _call(level: _Level, n: torch.Tensor, u: torch.Tensor, counter: _Counter) -> torch.Tensor:
    counter.depth += 1
    if level.fine:
        counter.fine += int(n.numel())
    else:
        counter.coarse += int(n.numel())
    return level.step(n, u)


def _f_relax(level: _Level, u: torch.Tensor, c: torch.Tensor, m: int, counter: _Counter) -> None:
    """u at every F-point from its interval's C-point, all intervals at once: m-1 dependent calls."""
    length = c[1:] - c[:-1]
    for i in range(1, m):
        starts = c[:-1][length > i]
        if starts.numel() == 0:
            break
        n = starts + (i - 1)
        u[n + 1] = _call(level, n, u[n], counter)


def _into_c(level: _Level, u: torch.Tensor, c: torch.Tensor, counter: _Counter) -> torch.Tensor:
    """Phi(u_{c-1}) for every C-point but the first: (J, B, *S)."""
    n = c[1:] - 1
    return _call(level, n, u[n], counter)


def _coarse_level(level: _Level, w: torch.Tensor, c: torch.Tensor, into: torch.Tensor, coarse: Coarse,
                  total: int, counter: _Counter) -> _Level:  # fmt: skip
    """The FAS coarse chain between the C-points c of ``level`` at their values w (J+1, B, *S) (``into``: Phi
    into each C-point but the first, (J, B, *S))."""
    span = level.span * (int(c[1] - c[0]) if c.numel() > 1 else 1)
    start = c[:-1] * level.span
    stop = torch.clamp(c[1:] * level.span, max=total)
    counter.depth += 1
    counter.coarse += int(start.numel())
    at_w = coarse(start, stop, w[:-1])  # Psi_j(w_j), all j at once

    def step(j: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return into[j] + (coarse(start[j], stop[j], v) - at_w[j])

    return _Level(step, int(c.numel()) - 1, span, fine=False)


def _sequential(level: _Level, v: torch.Tensor, counter: _Counter) -> None:
    for j in range(level.count):
        index = torch.tensor([j])
        v[j + 1] = _call(level, index, v[j : j + 1], counter)[0]


def _relax(level: _Level, u: torch.Tensor, c: torch.Tensor, cfg: MGRITConfig, counter: _Counter,
           after_c: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:  # fmt: skip
    """F or FCF relaxation in place; returns Phi into every C-point from the relaxed iterate. ``after_c(u)`` runs
    between FCF's C-step and its second F-step (a time chunk's first C-point arrives there from another rank)."""
    m = cfg.coarsening
    _f_relax(level, u, c, m, counter)
    if cfg.relax == "FCF":
        u[c[1:]] = _into_c(level, u, c, counter)
        if after_c is not None:
            after_c(u)
        _f_relax(level, u, c, m, counter)
    return _into_c(level, u, c, counter)


def _cycle(level: _Level, u: torch.Tensor, depth_left: int, cfg: MGRITConfig, coarse: Coarse, total: int,
           counter: _Counter, into: torch.Tensor | None = None) -> None:  # fmt: skip
    """One V-cycle on ``level`` in place (``into``: the relaxation already done, its C-point values)."""
    c = level.points(cfg.coarsening)
    if into is None:
        into = _relax(level, u, c, cfg, counter)
    u[c] = _corrected(level, c, u[c], into, depth_left, cfg, coarse, total, counter)
    _f_relax(level, u, c, cfg.coarsening, counter)


def _corrected(level: _Level, c: torch.Tensor, w: torch.Tensor, into: torch.Tensor, depth_left: int,
               cfg: MGRITConfig, coarse: Coarse, total: int, counter: _Counter) -> torch.Tensor:  # fmt: skip
    """The coarse-grid correction: new values (J+1, B, *S) of the C-points c from their values w and ``into``,
    by the coarse chain solved sequentially or by a V-cycle on it (``depth_left`` levels below this one)."""
    coarse_level = _coarse_level(level, w, c, into, coarse, total, counter)
    v = w.clone()
    if depth_left > 1 and coarse_level.count > cfg.coarsening:
        _cycle(coarse_level, v, depth_left - 1, cfg, coarse, total, counter)
    else:
        _sequential(coarse_level, v, counter)
    return v


def _record(result: MGRITResult, gaps: torch.Tensor, counter: _Counter, cfg: MGRITConfig, cap: int) -> bool:
    """Update ``result`` from gaps |Phi(u_{c-1}) - u_c| (J, B, *S) after a relaxation; True when the solve stops."""
    per_row = gaps.transpose(0, 1).reshape(gaps.shape[1], -1).amax(dim=1) if gaps.numel() else gaps.new_zeros(0)
    residual = float(per_row.max()) if per_row.numel() else 0.0
    for b, value in enumerate(per_row.tolist()):
        if result.row_iterations[b] < 0 and value <= cfg.tol:
            result.row_iterations[b] = result.iterations
    result.residuals.append(residual)
    result.residual, result.exact = residual, residual == 0.0
    result.converged = residual <= cfg.tol
    result.depth, result.fine_evaluations, result.coarse_evaluations = counter.depth, counter.fine, counter.coarse
    return result.converged or result.iterations >= cap


def mgriting(step: ChainStep, u0: torch.Tensor, steps: int, config: MGRITConfig | None = None,
             coarse: Coarse | None = None, guess: torch.Tensor | None = None,
             ) -> Generator[MGRITResult, None, MGRITResult]:  # fmt: skip
    """MGRIT cycle by cycle: yields the running result after each cycle, returns the final one.

    guess: (N+1, B, *S) first iterate (default: u_0 at every point); its u_0 is replaced by ``u0``.
    """
    cfg = config or MGRITConfig()
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    coarse = coarse or last_step_coarse(step)
    u = u0[None].repeat(steps + 1, *([1] * u0.dim())) if guess is None else guess.clone()
    if tuple(u.shape) != (steps + 1, *u0.shape):
        raise ValueError(f"guess must have shape {(steps + 1, *u0.shape)}; got {tuple(u.shape)}")
    u[0] = u0
    top = _Level(step, steps, 1, fine=True)
    c = top.points(cfg.coarsening)
    cap = cfg.cycle_cap(steps)
    counter = _Counter()
    result = MGRITResult(u, 0, False, False, math.inf)
    result.row_iterations = [-1] * u0.shape[0]
    while True:
        into = _relax(top, u, c, cfg, counter)
        if _record(result, (into - u[c[1:]]).abs(), counter, cfg, cap):
            return result
        _cycle(top, u, cfg.levels - 1, cfg, coarse, steps, counter, into=into)
        result.iterations += 1
        yield result


def mgrit(step: ChainStep, u0: torch.Tensor, steps: int, config: MGRITConfig | None = None,
          coarse: Coarse | None = None, guess: torch.Tensor | None = None) -> MGRITResult:  # fmt: skip
    """All of ``mgriting``: the trajectory u_0..u_N of u_{n+1} = step(n, u_n) (see the module docstring)."""
    return drain(mgriting(step, u0, steps, config, coarse, guess))


def sequential_chain(step: ChainStep, u0: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference: u_0..u_N by N dependent calls of ``step`` (one point per call), (N+1, B, *S)."""
    u = [u0]
    for n in range(steps):
        u.append(step(torch.tensor([n]), u[-1][None])[0])
    return torch.stack(u)
