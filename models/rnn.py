"""Recurrent next-pixel regressors: the vanilla softplus RNN of Song et al., a GRU, and an orthogonal RNN.

An image is read as a sequence of pixels in raster order (x_0..x_{T-1}, values in [0, 1]); the state after
pixels < t predicts pixel t:
    o_t = W_o h_t + b_o,   loss = (1/T) sum_t (o_t - x_t)^2,   h_0 = 0,
    softplus: h_{t+1} = softplus(W_h h_t + W_x x_t + b)                 (Song et al., ICML 2021, sec. 4.3)
    gru:      h_{t+1} = GRU(x_t, h_t), PyTorch's gate layout [r, z, n]  (Cho et al. 2014, arXiv 1406.1078)
    orthogonal: h_{t+1} = tanh(U h_t + W_x x_t + b), U special orthogonal, parametrized by n(n-1)/2 Givens angles
              in round-robin rounds (``models.givens``, Hamze 2021, arXiv 2106.00003)

The softplus and orthogonal cells share one form, act(W h + w_x x + b); U is built once per forward pass (or per
backward segment) from its angles, and cached while the angles are unchanged outside autograd.

Backpropagation through this recurrence is a linear block-bidiagonal system in g_t = dL/dh_t (Naumov 2017,
arXiv 1712.06577); ``step_jacobian`` exposes the per-step Jacobians dh_{t+1}/dh_t the gradient solvers need.

Shapes: x (B, T) pixels; hidden states (B, T+1, H) with h_0 = 0; predictions (B, T).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.givens import Givens, angle_gradient
from models.invariance import pad_rows

ELEMENTWISE = ("softplus", "orthogonal")  # cells of the form act(W h + w_x x + b)


@dataclass(frozen=True)
class RNNConfig:
    cell: str = "softplus"  # "softplus" (vanilla RNN of Song et al.), "gru" or "orthogonal"
    hidden_size: int = 128  # Song et al.: 128
    image_size: int = 10  # sequences are images resized to image_size x image_size: T = image_size ** 2


class RecurrentRegressor(nn.Module):
    w_x: nn.Parameter  # softplus cell: (H, 1), (H, H), (H,)
    w_h: nn.Parameter
    b: nn.Parameter
    gru: nn.GRU  # gru cell

    def __init__(self, config: RNNConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or RNNConfig()
        h = cfg.hidden_size
        if cfg.cell == "softplus":
            self.w_x = nn.Parameter(torch.randn(h, 1) * 0.5)
            self.w_h = nn.Parameter(torch.randn(h, h) / h**0.5 * 0.5)
            self.b = nn.Parameter(torch.zeros(h))
        elif cfg.cell == "gru":
            self.gru = nn.GRU(1, h, batch_first=True)
        elif cfg.cell == "orthogonal":
            self.w_x = nn.Parameter(torch.randn(h, 1) * 0.5)
            self.recurrent = Givens(h, init_scale=0.1)
            self.b = nn.Parameter(torch.zeros(h))
        else:
            raise ValueError(f"cell must be 'softplus', 'gru' or 'orthogonal'; got {cfg.cell!r}")
        self.readout = nn.Linear(h, 1)
        self._held: torch.Tensor | None = None  # U held for a forward pass or a backward segment (``holding``)
        self._cached: tuple[tuple[int, torch.dtype, torch.device], torch.Tensor] | None = None

    def recurrent_weight(self) -> torch.Tensor:
        """W_h (H, H): the softplus cell's parameter, or the orthogonal cell's U (held, cached, or built)."""
        if self.config.cell != "orthogonal":
            return self.w_h
        if self._held is not None:
            return self._held
        angles = self.recurrent.angles
        if torch.is_grad_enabled() and angles.requires_grad:
            return self.recurrent.matrix()  # a fresh graph: callers hold it for a whole pass (``holding``)
        key = (angles._version, angles.dtype, angles.device)
        if self._cached is None or self._cached[0] != key:
            with torch.no_grad():
                self._cached = (key, self.recurrent.matrix())
        return self._cached[1]

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Build U once for every step inside (one graph through the angles when autograd is on)."""
        if self.config.cell != "orthogonal" or self._held is not None:
            yield
            return
        self._held = self.recurrent_weight()
        try:
            yield
        finally:
            self._held = None

    def gru_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_ih (3H, 1), W_hh (3H, H), b_ih (3H,), b_hh (3H,)), gates stacked [r, z, n] as in nn.GRU."""
        g = self.gru
        return g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0  # type: ignore[return-value]

    @property
    def length(self) -> int:
        return self.config.image_size**2

    @property
    def state_bounds(self) -> tuple[float, float]:
        """A box every state h_t lies in, from h_0 = 0: softplus is positive; tanh, and a GRU's convex mixture of a
        tanh and the previous state, stay in [-1, 1]."""
        return (0.0, math.inf) if self.config.cell == "softplus" else (-1.0, 1.0)

    def cell(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: x_t (B,), h (B, H) -> h' (B, H).

        Batch invariant (``models.invariance``): rows are padded to a multiple of 8, so a row's result is the
        same whether the step-by-step loop calls it on B rows or a Jacobi iteration on B*T rows at once.
        """
        rows = h.shape[0]
        x_t, h = pad_rows(x_t), pad_rows(h)
        if self.config.cell in ELEMENTWISE:
            out = self.activation(self.softplus_pre(x_t, h))
        else:
            _, z, n, _ = self.gru_gates(x_t, h)
            out = (1 - z) * n + z * h
        return out[:rows]

    def softplus_pre(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The pre-activation a_t = W_h h_t + w_x x_t + b of the softplus and orthogonal cells: x (..., ),
        h (..., H) -> (..., H)."""
        return F.linear(h, self.recurrent_weight()) + x[..., None] * self.w_x[:, 0] + self.b

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """act(a) of the elementwise cells: softplus, or tanh (orthogonal)."""
        return F.softplus(pre) if self.config.cell == "softplus" else torch.tanh(pre)

    def slope(self, pre: torch.Tensor) -> torch.Tensor:
        """act'(a) of the elementwise cells: sigmoid (softplus) or 1 - tanh^2 (orthogonal)."""
        return torch.sigmoid(pre) if self.config.cell == "softplus" else 1 - torch.tanh(pre) ** 2

    def gru_gates(
        self, x: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """r, z, n and W_hn h + b_hn of GRU steps: x (...,), h (..., H) -> four (..., H)."""
        w_ih, w_hh, b_ih, b_hh = self.gru_weights()
        ir, iz, in_ = F.linear(x[..., None], w_ih, b_ih).chunk(3, dim=-1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        return r, z, torch.tanh(in_ + r * hn), hn

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) -> (B, T+1, H): h_0 = 0 and h_{t+1} after reading x_t."""
        b, h = x.shape[0], self.config.hidden_size
        h0 = x.new_zeros(b, h)
        if self.config.cell == "gru" and self.training:
            out, _ = self.gru(x[:, :, None], h0[None])  # the fused loop: same math, faster to train
            return torch.cat([h0[:, None], out], dim=1)
        if self.config.cell in ELEMENTWISE and self.training:  # the same math in fewer ops: faster to train
            with self.holding():
                weight_t, drive = self.recurrent_weight().t(), x[..., None] * self.w_x[:, 0] + self.b  # (B, T, H)
                states = [h0]
                for drive_t in drive.unbind(dim=1):  # unbind: its backward stacks, where slicing would add T zeros
                    states.append(self.activation(torch.addmm(drive_t, states[-1], weight_t)))
            return torch.stack(states, dim=1)
        states = [h0]
        with self.holding():
            for t in range(x.shape[1]):
                states.append(self.cell(x[:, t], states[-1]))
        return torch.stack(states, dim=1)

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """(B, T+1, H) -> predictions (B, T) of pixel t from h_t (the last state predicts nothing)."""
        return self.readout(states[:, :-1])[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.hidden_states(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sequence mean squared error over the T predictions, (B,)."""
        return ((self(x) - x) ** 2).mean(dim=1)

    def step_locals(self, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the backward pass of steps h_{t+1} = cell(x_t, h_t) needs besides dL/dh_{t+1}, computed once.

        x: (..., ) inputs x_t; h: (..., H) states h_t. softplus: the slope sigmoid(a_t); gru: the gates r, z, n and
        W_hn h + b_hn. These depend only on the forward pass, so a solver iterating the backward system reuses
        them: every iteration is then elementwise work and one matmul by the recurrent weight.
        """
        if self.config.cell in ELEMENTWISE:
            return {"x": x, "h": h, "slope": self.slope(self.softplus_pre(x, h))}
        r, z, n, hn = self.gru_gates(x, h)
        return {"x": x, "h": h, "r": r, "z": z, "n": n, "hn": hn}

    def step_backward(
        self, local: dict[str, torch.Tensor], g_next: torch.Tensor, params: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Backward through every step at once, given dL/dh_{t+1}, without forming Jacobians.

        local: ``step_locals(x, h)`` of the steps; g_next: (..., H) = dL/dh_{t+1}.
        Returns (J_t^T g_next (..., H); parameter gradients summed over every step and row, keyed like
        ``named_parameters`` (empty when ``params`` is False: a Jacobi iteration needs only the first term);
        dL/dx_t through the step (..., )). The batched reductions of Song et al. (sec. 4.3): one matmul per
        parameter over all (row, step) pairs, never a per-step outer product.
        """

        def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # sum over leading dims of a b^T
            return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])

        def total(a: torch.Tensor) -> torch.Tensor:
            return a.reshape(-1, a.shape[-1]).sum(dim=0)

        x, h = local["x"], local["h"]
        if self.config.cell in ELEMENTWISE:
            e = local["slope"] * g_next  # dL/da_t
            weight = self.recurrent_weight()
            grads = {"w_x": outer(e, x[..., None]), "b": total(e)} if params else {}
            if params and self.config.cell == "softplus":
                grads["w_h"] = outer(e, h)
            elif params:  # dL/dU, then through U(angles) by the round-robin backward
                angles = self.recurrent.angles.detach()
                grads["recurrent.angles"] = angle_gradient(angles, weight, outer(e, h), self.recurrent.schedule)
            return e @ weight, grads, e @ self.w_x[:, 0]
        w_ih, w_hh, _, _ = self.gru_weights()
        r, z, n, hn = local["r"], local["z"], local["n"], local["hn"]
        d_npre = g_next * (1 - z) * (1 - n * n)
        d_r = d_npre * hn * r * (1 - r)
        d_z = g_next * (h - n) * z * (1 - z)
        d_gh = torch.cat([d_r, d_z, d_npre * r], dim=-1)  # dL/d(W_hh h + b_hh), gates [r, z, n]
        d_gi = torch.cat([d_r, d_z, d_npre], dim=-1)  # dL/d(W_ih x + b_ih)
        grads = (
            {
                "gru.weight_ih_l0": outer(d_gi, x[..., None]),
                "gru.weight_hh_l0": outer(d_gh, h),
                "gru.bias_ih_l0": total(d_gi),
                "gru.bias_hh_l0": total(d_gh),
            }
            if params
            else {}
        )
        return d_gh @ w_hh + g_next * z, grads, (d_gi @ w_ih)[..., 0]

    def step_jacobian(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """dh'/dh of one step for every row: x_t (..., ), h (..., H) -> (..., H, H), computed in closed form."""
        if self.config.cell in ELEMENTWISE:
            return self.slope(self.softplus_pre(x_t, h))[..., :, None] * self.recurrent_weight()
        _, w_hh, _, _ = self.gru_weights()
        r, z, n, hn = self.gru_gates(x_t, h)
        u_r, u_z, u_n = w_hh.chunk(3, dim=0)
        dr = (r * (1 - r))[..., :, None] * u_r  # dr/dh
        dz = (z * (1 - z))[..., :, None] * u_z
        dn = (1 - n * n)[..., :, None] * (r[..., :, None] * u_n + hn[..., :, None] * dr)
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        return (1 - z)[..., :, None] * dn + (h - n)[..., :, None] * dz + z[..., :, None] * eye
