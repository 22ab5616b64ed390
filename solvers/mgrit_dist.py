"""MGRIT across processes: the fine level split into contiguous time chunks, one per rank (``torch.distributed``).

The same iteration as ``solvers.mgrit`` (Falgout et al. 2014; Schroder, arXiv 1708.02276), the same bits: rank r
of R owns the coarse intervals [J r / R, J (r+1) / R) of the J intervals between C-points, and the fine points
inside them. Per cycle:
  - relaxation on each rank's chunk, all chunks at once (the fine steps: where the work is). F-relaxation needs
    nothing from other ranks; the C-step of FCF needs the C-point that starts a chunk, which the rank before
    computed: one point-to-point exchange per cycle (each rank sends its last C-point to the next);
  - the C-point values and the fine propagation into them are gathered on every rank (``all_gather``, J+1 and J
    states), every rank computes the residual and the stopping decision from the same numbers (no extra vote),
    and solves the coarse problem (J points, m times fewer than the fine chain) by the same code as one process;
  - each rank injects its C-points and F-relaxes its chunk.
So the result, the iterations and the residuals equal single-process ``mgrit`` bit for bit (for a row-invariant
step), and the finite-termination certificate is unchanged. The coarse levels are replicated rather than split:
they cost 1/m of the fine level per cycle, which is what bounds the speedup over ranks (Amdahl), and depth is
counted as for one process.

While it runs, ``states`` holds this rank's chunk and ``fine_evaluations`` this rank's fine work; at the end, the
whole trajectory and the fine work of all ranks, on every rank. Launch with
``torchrun`` (gloo on CPU, nccl on GPUs); the process group must be initialised by the caller.
Shapes as in ``solvers.mgrit``: u0 (B, *S); states (N+1, B, *S) on every rank at the end.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import torch
import torch.distributed as dist

from solvers.mgrit import (
    ChainStep,
    Coarse,
    MGRITConfig,
    MGRITResult,
    _corrected,
    _Counter,
    _f_relax,
    _Level,
    _record,
    _relax,
    last_step_coarse,
)
from solvers.pieces import drain


def chunk_bounds(intervals: int, ranks: int, rank: int) -> tuple[int, int]:
    """The coarse intervals [first, last) rank ``rank`` of ``ranks`` owns: contiguous, sizes differ by at most 1."""
    return intervals * rank // ranks, intervals * (rank + 1) // ranks


def _gather(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``local`` (count_r, ...) in rank order, on every rank (padded all_gather)."""
    width = max(counts)
    padded = local.new_zeros(width, *local.shape[1:])
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def _pass_right(u: torch.Tensor, rank: int, ranks: int) -> None:
    """Send this chunk's last point to the next rank; receive the previous rank's into u[0] (the chunk's start)."""
    requests = []
    if rank + 1 < ranks:
        requests.append(dist.isend(u[-1].contiguous(), rank + 1))
    incoming = torch.empty_like(u[0])
    if rank > 0:
        requests.append(dist.irecv(incoming, rank - 1))
    for request in requests:
        if request is not None:  # None only for ranks outside the group
            request.wait()
    if rank > 0:
        u[0] = incoming


def mgriting_distributed(
    step: ChainStep, u0: torch.Tensor, steps: int, config: MGRITConfig | None = None, coarse: Coarse | None = None
) -> Generator[MGRITResult, None, MGRITResult]:  # fmt: skip
    """``solvers.mgrit.mgriting`` over the ranks of the default process group: yields after each cycle."""
    cfg = config or MGRITConfig()
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    rank, ranks = dist.get_rank(), dist.get_world_size()
    coarse = coarse or last_step_coarse(step)
    top = _Level(step, steps, 1, fine=True)
    c = top.points(cfg.coarsening)
    intervals = int(c.numel()) - 1
    if intervals < ranks:
        raise ValueError(
            f"{intervals} coarse intervals cannot be split over {ranks} ranks: use fewer ranks or a smaller m"
        )
    first, last = chunk_bounds(intervals, ranks, rank)
    counts = [b - a for a, b in (chunk_bounds(intervals, ranks, r) for r in range(ranks))]
    start = int(c[first])
    local_c = c[first : last + 1] - start  # this chunk's C-points, its first one owned by the rank before
    local = _Level(lambda n, u: step(n + start, u), int(c[last]) - start, 1, fine=True)
    u = u0[None].repeat(int(c[last]) - start + 1, *([1] * u0.dim()))
    cap = cfg.cycle_cap(steps)
    counter = _Counter()
    result = MGRITResult(u, 0, False, False, math.inf, row_iterations=[-1] * u0.shape[0])
    while True:
        into = _gather(_relax(local, u, local_c, cfg, counter, lambda u: _pass_right(u, rank, ranks)), counts)
        w = torch.cat([u0[None], _gather(u[local_c[1:]], counts)])  # every C-point, u_0 first
        if _record(result, (into - w[1:]).abs(), counter, cfg, cap):
            break
        v = _corrected(top, c, w, into, cfg.levels - 1, cfg, coarse, steps, counter)
        u[local_c] = v[first : last + 1]
        _f_relax(local, u, local_c, cfg.coarsening, counter)
        result.iterations += 1
        yield result
    fine = torch.tensor([float(counter.fine)], device=u0.device)
    dist.all_reduce(fine)  # fine work is split over the ranks; the coarse levels are replicated, counted once
    result.fine_evaluations = int(fine.item())
    # Every rank's fine points (its chunk without the shared first point), in order, behind u_0.
    points = [int(c[b]) - int(c[a]) for a, b in (chunk_bounds(intervals, ranks, r) for r in range(ranks))]
    result.states = torch.cat([u0[None], _gather(u[1:], points)])
    return result


def mgrit_distributed(
    step: ChainStep, u0: torch.Tensor, steps: int, config: MGRITConfig | None = None, coarse: Coarse | None = None
) -> MGRITResult:  # fmt: skip
    """All of ``mgriting_distributed``: u_0..u_N on every rank."""
    return drain(mgriting_distributed(step, u0, steps, config, coarse))
