"""RNN gradients as a triangular linear system: ordinary BPTT, Jacobi (= truncated BPTT) and a parallel scan.

The gradient half of the recurrent families (``samplers.families.recurrent``).

For the next-pixel regressors of ``models.rnn`` with states h_0..h_T and loss L, let g_t = dL/dh_t. Then
    g_t = c_t + J_t^T g_{t+1},   g_T = c_T = 0,   c_t = W_o^T dL/do_t,   J_t = dh_{t+1}/dh_t,
an upper block-bidiagonal system (Naumov 2017, arXiv 1712.06577; Song et al. 2021, arXiv 2002.03629, sec. 4.3).
- ``sequential``: ordinary autograd BPTT on the model (the reference).
- ``jacobi``: ``solvers.solve`` on the time-reversed system; one iteration is one batched vector-Jacobian
  product over all T steps (matrix-free). n iterations from zero are exactly n-step truncated BPTT; exact once
  the prefix is certified (at most T iterations). With ``max_iterations`` < that, the answer says ``exact: false``.
- ``scan``: ``solvers.scan.linear_scan`` on the explicit Jacobians, exact in ceil(log2 T) levels.
Parameter gradients then come from batched reductions over (B, T) of per-step contributions.

Shapes: x (B, T) pixels in [0, 1]; states (B, T+1, H); g (B, T, H) = g_1..g_T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from models.rnn import RecurrentRegressor
from samplers.requests import GradientRequest, GradientResponse, GradientVerified, TensorOut
from samplers.work import Context, Respond, SliceWork
from solvers import solve_backward
from solvers.scan import linear_scan

GRADIENT_METHODS = ("sequential", "jacobi", "scan")
SCAN_ELEMENTS = 2**27  # dense Jacobians held at once (512 MiB in float32): larger batches are scanned in chunks


@dataclass(frozen=True)
class GradientResult:
    loss: float
    gradients: dict[str, torch.Tensor]  # name -> gradient, same shape as the parameter (or (B, T) for inputs)
    iterations: int  # sequential steps of the method: T (sequential), Jacobi evaluations, or scan levels
    exact: bool  # the solve is the full BPTT gradient (to rounding); False for truncated Jacobi
    residual: float  # max |g_t - c_t - J_t^T g_{t+1}| of the returned g (0 for autograd)
    method: str


def autograd_gradient(
    model: RecurrentRegressor, x: torch.Tensor, wrt: str, targets: torch.Tensor | None = None
) -> tuple[float, dict[str, torch.Tensor]]:
    """Ordinary backpropagation through time. targets: (B, T), default the inputs (next-pixel regression)."""
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(wrt == "inputs")
        params = dict(model.named_parameters())
        wanted = inputs if targets is None else targets
        loss = ((model(inputs) - wanted) ** 2).mean()
        leaves = [inputs] if wrt == "inputs" else list(params.values())
        grads = torch.autograd.grad(loss, leaves)
    names = ["inputs"] if wrt == "inputs" else list(params)
    return float(loss.detach()), dict(zip(names, grads, strict=True))


class BackwardSystem:
    """The linear system g_t = c_t + J_t^T g_{t+1} of one batch, with everything the solvers need."""

    def __init__(self, model: RecurrentRegressor, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        self.model, self.x, self.own_targets = model, x, targets is None
        batch, length = x.shape
        wanted = x if targets is None else targets
        with torch.no_grad():
            self.states = model.hidden_states(x)  # (B, T+1, H)
            predictions = model.predict(self.states)  # (B, T)
            self.loss = float(((predictions - wanted) ** 2).mean())
            self.d_out = 2.0 * (predictions - wanted) / (batch * length)  # dL/do_t, t = 0..T-1
            direct = self.d_out[..., None] * model.readout.weight[0]  # c_t for t = 0..T-1
            # Unknowns g_1..g_T: c_1..c_{T-1}, then c_T = 0 (h_T predicts nothing).
            self.c = torch.cat([direct[:, 1:], torch.zeros_like(direct[:, :1])], dim=1)
            # Local derivatives of steps t = 0..T-1 (h_{t+1} = cell(x_t, h_t)), computed once for every solver.
            self.local = model.step_locals(x, self.states[:, :-1])
            self.local_after_first = {name: value[:, 1:] for name, value in self.local.items()}  # t = 1..T-1

    @torch.no_grad()
    def vjp(self, g: torch.Tensor) -> torch.Tensor:
        """(J_t^T g_{t+1}) for t = 1..T given g = g_1..g_T; the term for t = T is 0. (B, T, H)."""
        out, _, _ = self.model.step_backward(self.local_after_first, g[:, 1:], params=False)
        return torch.cat([out, torch.zeros_like(g[:, :1])], dim=1)

    @torch.no_grad()
    def residual(self, g: torch.Tensor) -> float:
        return float((g - self.c - self.vjp(g)).abs().max()) if g.numel() else 0.0

    @torch.no_grad()
    def jacobians(self, rows: slice = slice(None)) -> torch.Tensor:
        """A_t = J_t^T for t = 1..T (A_T = 0), (B, T, H, H), for the scan (of the given batch rows)."""
        x_t, h_t = self.x[rows, 1:], self.states[rows, 1:-1]
        jt = self.model.step_jacobian(x_t, h_t).transpose(-1, -2)
        return torch.cat([jt, torch.zeros_like(jt[:, :1])], dim=1)

    @torch.no_grad()
    def gradients(self, g: torch.Tensor, wrt: str) -> dict[str, torch.Tensor]:
        """Batched reductions: every parameter's gradient from g_1..g_T (or dL/dx)."""
        model, states = self.model, self.states
        _, step_grads, d_x = model.step_backward(self.local, g, params=wrt == "params")  # steps t = 0..T-1
        if wrt == "inputs":  # through the steps, and (next-pixel regression) as the regression target
            return {"inputs": d_x - self.d_out if self.own_targets else d_x}
        grads = dict(step_grads)
        h_pred = states[:, :-1]
        grads["readout.weight"] = (self.d_out[..., None] * h_pred).sum(dim=(0, 1))[None]
        grads["readout.bias"] = self.d_out.sum().reshape(1)
        return {name: grads[name] for name, _ in model.named_parameters()}


def jacobi_solve(system: BackwardSystem, max_iterations: int | None) -> tuple[torch.Tensor, int, bool]:
    """Jacobi on the backward (upper-triangular) system g = c + vjp(g), through the one solver loop."""
    result = solve_backward(lambda g: system.c + system.vjp(g), torch.zeros_like(system.c), "jacobi", max_iterations)
    return result.x, int(result.iterations.max()) if result.iterations.numel() else 0, result.all_converged


def rnn_gradient(
    model: RecurrentRegressor, x: torch.Tensor, method: str = "scan", wrt: str = "params",
    max_iterations: int | None = None, targets: torch.Tensor | None = None,
) -> GradientResult:  # fmt: skip
    """Gradient of the mean loss over the batch x: (B, T) (targets: default x itself) by the chosen method."""
    if wrt not in ("params", "inputs"):
        raise ValueError(f"wrt must be 'params' or 'inputs'; got {wrt!r}")
    if method not in GRADIENT_METHODS:
        raise ValueError(f"method must be one of sequential, jacobi, scan; got {method!r}")
    length = x.shape[1]
    if method == "sequential":
        loss, grads = autograd_gradient(model, x, wrt, targets)
        return GradientResult(loss, grads, length, True, 0.0, method)
    system = BackwardSystem(model, x, targets)
    with torch.no_grad():
        if method == "jacobi":
            g, iterations, exact = jacobi_solve(system, max_iterations)
        else:
            g, iterations, exact = scan_solve(system), levels_of(length), True
        return GradientResult(system.loss, system.gradients(g, wrt), iterations, exact, system.residual(g), method)


def levels_of(length: int) -> int:
    """Combine levels of the scan: ceil(log2 T)."""
    return math.ceil(math.log2(length)) if length > 1 else 0


def scan_solve(system: BackwardSystem) -> torch.Tensor:
    """The scan over batch chunks that fit the memory budget (independent chunks: the depth is the same)."""
    batch, length, hidden = system.c.shape
    chunk = max(1, SCAN_ELEMENTS // max(length * hidden * hidden, 1))
    parts = []
    for start in range(0, batch, chunk):
        rows = slice(start, start + chunk)
        parts.append(linear_scan(system.jacobians(rows), system.c[rows], reverse=True).h)
    return torch.cat(parts)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a) if a else 0.0


def gradient_work(
    model: RecurrentRegressor, request: GradientRequest, method: str, x: torch.Tensor, targets: torch.Tensor | None
) -> SliceWork:
    """POST /gradient as work done in slices; ``method`` is a concrete one ("auto" resolved)."""

    def slices() -> Any:
        result = rnn_gradient(model, x, method, request.wrt, request.max_iterations, targets)
        yield
        verified = None
        if request.verify:
            _, reference = autograd_gradient(model, x, request.wrt, targets)
            verified = GradientVerified(max_abs_diff=max_abs_diff(result.gradients, reference))
        gradients = {k: TensorOut.model_construct(shape=list(v.shape), data=v.flatten().tolist())
                     for k, v in result.gradients.items()}  # fmt: skip

        def respond(context: Context) -> GradientResponse:
            return GradientResponse.model_construct(
                model=request.model, method=method, loss=result.loss, gradients=gradients,
                iterations=result.iterations, sequential_steps=x.shape[1], residual=result.residual,
                exact=result.exact, verified=verified, timings_ms=context.timings(),
            )  # fmt: skip

        finished: Respond = respond
        return finished

    return SliceWork(slices())
