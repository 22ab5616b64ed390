"""Test helper: backpropagation through a deep MLP as an upper block-bidiagonal linear system (Naumov 2017,
arXiv 1712.06577), solved by ``solvers.scan`` and ``solvers.solve_backward``: the solvers on a second kind of
backward system.

For hidden layers h_l = tanh(W_l h_{l-1} + b_l), l = 1..L (all of width H), and a readout o = W_o h_L + b_o with
loss f(o), the gradients d_l = dL/dh_l satisfy
    d_L = W_o^T f'(o),   d_l = J_{l+1}^T d_{l+1},   J_{l+1} = diag(1 - h_{l+1}^2) W_{l+1},
a linear recurrence backwards in depth. ``scan`` solves it in ceil(log2 L) levels (``solvers.scan``); ``jacobi``
in at most L iterations through ``solvers.solve`` (the system is nilpotent: no shortcut); ``sequential`` is
autograd. Weight gradients are then batched reductions: dW_l = sum_b (d_l (1 - h_l^2)) h_{l-1}^T.

Shapes: x (B, D_in); weights[0] (H, D_in), weights[1:] (H, H); readout (K, H); d (B, L, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from solvers import solve_backward
from solvers.scan import linear_scan


@dataclass
class TanhMLP:
    weights: list[torch.Tensor]  # L hidden layers
    biases: list[torch.Tensor]
    readout: torch.Tensor
    readout_bias: torch.Tensor

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases, self.readout, self.readout_bias]

    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        hs = [x]
        for w, b in zip(self.weights, self.biases, strict=True):
            hs.append(torch.tanh(F.linear(hs[-1], w, b)))
        return hs

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.linear(self.states(x)[-1], self.readout, self.readout_bias), labels)


def mlp_gradients(mlp: TanhMLP, x: torch.Tensor, labels: torch.Tensor, method: str = "scan") -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy for every parameter (in ``parameters()`` order)."""
    if method == "sequential":
        with torch.enable_grad():
            params = [p.detach().requires_grad_(True) for p in mlp.parameters()]
            count = len(mlp.weights)
            twin = TanhMLP(params[:count], params[count : 2 * count], params[-2], params[-1])
            return list(torch.autograd.grad(twin.loss(x, labels), params))
    with torch.no_grad():
        hs = mlp.states(x)
        depth = len(mlp.weights)
        logits = F.linear(hs[-1], mlp.readout, mlp.readout_bias)
        d_logits = (torch.softmax(logits, dim=1) - F.one_hot(labels, logits.shape[1]).to(x.dtype)) / x.shape[0]
        hidden = torch.stack(hs[1:], dim=1)  # (B, L, H)
        slope = 1 - hidden**2  # tanh'
        # A_l = J_{l+1}^T for l = 1..L-1 (A_L = 0); b_L = W_o^T dL/do, b_l = 0 below.
        a = hidden.new_zeros(*hidden.shape, hidden.shape[-1])
        if depth > 1:  # J_{l+1} = diag(slope_{l+1}) W_{l+1}
            a[:, :-1] = (slope[:, 1:, :, None] * torch.stack(mlp.weights[1:])[None]).transpose(-1, -2)
        b = torch.zeros_like(hidden)
        b[:, -1] = d_logits @ mlp.readout
        if method == "scan":
            d = linear_scan(a, b, reverse=True).h
        elif method == "jacobi":  # d_l = A_l d_{l+1} + b_l: upper-triangular

            def step(d: torch.Tensor) -> torch.Tensor:
                following = torch.cat([d[:, 1:], torch.zeros_like(d[:, :1])], dim=1)  # d_{l+1}; d_{L+1} = 0
                return b + (a @ following[..., None])[..., 0]

            d = solve_backward(step, torch.zeros_like(b), method="jacobi").x
        else:
            raise ValueError(f"method must be sequential, jacobi or scan; got {method!r}")
        e = d * slope  # dL/d(pre-activation) of every layer, (B, L, H)
        d_w = [e[:, i].T @ hs[i] for i in range(depth)]
        d_b = [e[:, i].sum(0) for i in range(depth)]
        return [*d_w, *d_b, d_logits.T @ hs[-1], d_logits.sum(0)]
