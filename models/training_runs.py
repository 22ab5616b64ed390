"""Training runs as chains: w_{k+1} = Phi_k(w_k), one optimizer step on a fixed mini-batch (Schroder, arXiv
1708.02276), for MGRIT (``solvers.mgrit``) to solve in parallel over the K steps.

The model problems are small fully connected tanh networks, as in the paper: a regression (fit sin(x) on
[-pi, pi], 1-16-16-1, mean squared error) and a classification (Fashion-MNIST at 7 x 7 pixels, 2000 training
images, 49-24-10, cross-entropy). The mini-batch of step k is fixed by the seed (epochs of a seeded permutation),
so serial training has one well-defined trajectory and MGRIT converges to exactly it.

The state is the flat parameter vector (plain SGD) or parameters and momentum buffer (momentum SGD, PyTorch's
form v' = mu v + g, w' = w - lr v'). ``step`` evaluates one optimizer step for P steps at once (each its own
weights and mini-batch), batch invariant: the gradients are formed per step with the same kernels whether one step
or many share a call (``loops``: a Python loop over the P steps; exactness needs it, see ``tests``).

Coarse propagators (a coarse step spans fine steps start..stop-1):
  - "frozen": the gradients of all the span's mini-batches taken at the span's first weights (one parallel
    gradient evaluation: depth 1, work stop - start), then the span's optimizer updates applied with them;
  - "scaled": one step with the learning rate times the span, on the span's last mini-batch (work 1).

Shapes: state (P, B, D) with B = 1 row; D = parameters (SGD) or 2 x parameters (momentum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.data import load_split, resize, to_unit

PROBLEMS = ("regression", "classification")
COARSE = ("frozen", "scaled")


@dataclass(frozen=True)
class RunConfig:
    problem: str = "regression"  # "regression" (sin, 1-16-16-1) or "classification" (Fashion-MNIST 7x7, 49-24-10)
    steps: int = 1024  # K optimizer steps
    batch_size: int = 16
    learning_rate: float = 0.002  # MGRIT converged at K = 1024 with this; at 0.01 its coarse steps were unstable
    momentum: float = 0.0  # 0: plain SGD; > 0: momentum SGD
    seed: int = 0  # initial weights and mini-batch order
    coarse: str = "frozen"  # "frozen" or "scaled" (see the module docstring)
    data: str | None = None  # Fashion-MNIST IDX directory (classification; default: the Debian package's)

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}; got {self.problem!r}")
        if self.coarse not in COARSE:
            raise ValueError(f"coarse must be one of {COARSE}; got {self.coarse!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}")


class TrainingRun:
    """The chain of one training run: ``step``, ``coarse`` and the initial state (serial training is
    ``solvers.mgrit.sequential_chain(run.step, run.u0, K)``)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = cfg = config
        g = torch.Generator().manual_seed(cfg.seed)
        if cfg.problem == "regression":
            x = torch.linspace(-math.pi, math.pi, 256, dtype=torch.float64)[:, None]
            self.inputs, self.targets = x, torch.sin(x)
            self.sizes = [1, 16, 16, 1]
        else:
            split = load_split("train", cfg.data).subset(slice(0, 2000))
            self.inputs = to_unit(resize(split.images, 7)).reshape(2000, 49).double()
            self.targets = split.labels
            self.sizes = [49, 24, 10]
        self.shapes = [(o, i) for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True)]
        weights = []  # drawn first: the initial weights do not depend on K
        for out, inp in self.shapes:
            weights += [torch.randn(out * inp, generator=g, dtype=torch.float64) / math.sqrt(inp),
                        torch.zeros(out, dtype=torch.float64)]  # fmt: skip
        count = len(self.inputs)
        epochs = math.ceil(cfg.steps * cfg.batch_size / count)
        order = torch.cat([torch.randperm(count, generator=g) for _ in range(epochs)])
        self.batches = order[: cfg.steps * cfg.batch_size].reshape(cfg.steps, cfg.batch_size)
        self.parameters = sum(out * inp + out for out, inp in self.shapes)
        w0 = torch.cat(weights)
        state = w0 if cfg.momentum == 0 else torch.cat([w0, torch.zeros_like(w0)])
        self.u0 = state[None]  # (B=1, D)
        self.gradient_evaluations = 0

    # -- the network -------------------------------------------------------------------------------------------
    def loss(self, w: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The mean loss of flat weights w (parameters,) on the training examples ``batch`` (b,)."""
        h, offset = self.inputs[batch], 0
        for layer, (out, inp) in enumerate(self.shapes):
            weight = w[offset : offset + out * inp].view(out, inp)
            bias = w[offset + out * inp : offset + out * inp + out]
            offset += out * inp + out
            h = F.linear(h, weight, bias)
            if layer < len(self.shapes) - 1:
                h = torch.tanh(h)
        if self.config.problem == "regression":
            return ((h - self.targets[batch]) ** 2).mean()
        return F.cross_entropy(h, self.targets[batch])

    def gradient(self, w: torch.Tensor, k: int) -> torch.Tensor:
        """dL_k/dw (parameters,) on step k's mini-batch."""
        self.gradient_evaluations += 1
        with torch.enable_grad():
            w = w.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(w, self.batches[k]), w)
        return grad

    def update(self, state: torch.Tensor, grad: torch.Tensor, rate: float) -> torch.Tensor:
        """One optimizer update of a state (D,) with a given gradient (parameters,)."""
        p = self.parameters
        if self.config.momentum == 0:
            return state - rate * grad
        velocity = self.config.momentum * state[p:] + grad
        return torch.cat([state[:p] - rate * velocity, velocity])

    # -- the chain ---------------------------------------------------------------------------------------------
    def step(self, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Phi_n for P steps at once: n (P,), u (P, 1, D) -> (P, 1, D)."""
        rate = self.config.learning_rate
        out = [
            self.update(s[0], self.gradient(s[0, : self.parameters], int(k)), rate) for k, s in zip(n, u, strict=False)
        ]
        return torch.stack(out)[:, None]

    def coarse(self, start: torch.Tensor, stop: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """An approximation of steps start..stop-1 for P spans at once: (P,), (P,), (P, 1, D) -> (P, 1, D)."""
        rate, out = self.config.learning_rate, []
        for a, b, s in zip(start.tolist(), stop.tolist(), u, strict=False):
            state, w = s[0], s[0, : self.parameters]
            if self.config.coarse == "scaled":
                out.append(self.update(state, self.gradient(w, b - 1), rate * (b - a)))
                continue
            for k in range(a, b):  # the span's gradients, all at the first weights (independent: one parallel step)
                state = self.update(state, self.gradient(w, k), rate)
            out.append(state)
        return torch.stack(out)[:, None]

    def weights(self, state: torch.Tensor) -> torch.Tensor:
        """The parameters (parameters,) of a state (1, D) or (D,)."""
        return state.reshape(-1)[: self.parameters]

    def full_loss(self, state: torch.Tensor) -> float:
        """The loss on every training example (a check that the run trained)."""
        return float(self.loss(self.weights(state), torch.arange(len(self.inputs))))
