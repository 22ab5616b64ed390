"""The MADE family: sampling binarized images as a lower-triangular system (Song et al., ICML 2021, arXiv 2002.03629).

Unknown d is pixel d (raster order). With fixed uniforms u (one per pixel, drawn before solving),
    x_d = 1[u_d < sigmoid(logit_d(x_{<d}))],
which is exactly what the ordinary sampler draws at step d. One Jacobi evaluation is one forward pass of the
masked network (all 784 conditionals at once); the reference sequential sampler (``sequential_naive``) needs 784.

``sequential`` is the work-optimal sequential sampler: degree order (``models.made_degrees``), every hidden unit
computed once, about one forward pass of arithmetic in 784 small steps. It sums in another order, so its sample is
a candidate that one masked forward certifies (``samplers.certify``); a failing row is finished by Jacobi.
``jacobi_window`` is Jacobi on the same layout that recomputes only a window past the final prefix, with what the
prefix contributes accumulated once (``models.made_window``); its candidate is certified the same way.

``jacobi_split`` (parafeed's splitting iteration): the logit is hidden(x) + direct(x). One evaluation runs the
expensive hidden path once on the current iterate (lagged, as in Jacobi) and then solves the cheap direct path in
raster order: row by row (Gauss-Seidel across rows), each row to its own fixed point (at most W small sweeps).
Chains through neighbouring pixels, the ones that make plain Jacobi advance about a row per pass, are resolved
inside one evaluation. Certification is unchanged: if the output agrees with the iterate on a prefix, every logit
there was computed from that prefix, so the prefix (and the next pixel) is final. Because direct weights are
fixed-point, the direct sums are exact in any order, and the result is bit for bit the ordinary forward's.

Exactness: masked weights are exact zeros, the MADE forward is batch invariant (``models.invariance``), so every
method reaches bit for bit the sequential sample. Shapes: x (N, D) float32 of 0/1; noise (N, D).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from models.made import MADE
from models.made_degrees import DegreeOrder
from models.made_window import DEFAULT_WINDOW, WindowedJacobi
from models.registry import Entry
from samplers.family import Offer
from samplers.noise import uniforms
from samplers.sampling import FAST, SamplerFamily, fast_plan, sampling_offer
from samplers.system import Plan, StatelessSystem

SPLIT = "jacobi_split"  # needs direct connections
METHODS = FAST  # every MADE; sequential_naive is one masked forward per pixel (784 passes)


class MadeFamily(SamplerFamily):
    name = "made"
    offers = sampling_offer((*METHODS, SPLIT), auto_key="made")

    def offers_for(self, entry: Entry) -> dict[str, Offer]:
        return self.offers if entry.config.get("direct", True) else sampling_offer(METHODS, auto_key="made")

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        return list(entry.config.get("image_shape", [1, 28, 28])), int(entry.config.get("input_size", 784))

    def system(self, model: torch.nn.Module, name: str) -> MadeSystem:
        assert isinstance(model, MADE)
        return MadeSystem(model, name)


class MadeSystem(StatelessSystem):
    unknown_shape: tuple[int, ...] = ()
    dtype = torch.float32
    levels = 2

    def __init__(self, model: MADE, name: str) -> None:
        self.model, self.name = model, name
        self.methods: tuple[str, ...] = (*METHODS, SPLIT) if model.direct is not None else METHODS
        self.unknowns = model.config.input_size
        self.image_shape = model.config.image_shape
        self.block_size = self.image_shape[2]
        self.device = next(model.parameters()).device
        self.direct_sweeps = 0  # inner sweeps jacobi_split has run (one sweep: a W x W direct product per row)
        self.order: DegreeOrder | None = None  # the degree-ordered layout, built on first use
        self.fast_macs = 0  # multiply-adds per row the fast paths have done (benchmarks read it, as direct_sweeps)

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        return uniforms(self.name, seed, indices, (self.unknowns,)).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, device=noise.device)

    def plan(self, method: str) -> Plan:
        fast = fast_plan(method, self.evaluate, self.propose_sequential, self.propose_window)
        if fast is not None:  # degree order and its window: candidates certified by one masked forward
            return fast
        if method == SPLIT:
            if self.model.direct is None:
                raise ValueError(f"{self.name} has no direct connections: jacobi_split does not apply")
            return Plan("jacobi", self.evaluate_split, "evaluate_split")
        return super().plan(method)  # one dense masked pass computes every conditional: nothing worth caching

    def degree_order(self) -> DegreeOrder:
        if self.order is None:
            self.order = DegreeOrder(self.model)
        return self.order

    def propose_sequential(
        self, noise: torch.Tensor, block_size: int | None = None
    ) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """The degree-ordered sequential sample of ``noise`` (N, D): D steps, each hidden unit computed once."""
        order = self.degree_order()
        x, _ = yield from order.sample(noise)
        self.fast_macs += order.macs()
        return x, [self.unknowns] * noise.shape[0]

    def propose_window(
        self, noise: torch.Tensor, block_size: int | None = None
    ) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """Windowed cached Jacobi (``models.made_window``): a window of ``block_size`` positions past the final
        prefix per iteration; depth = its iterations."""
        solver = WindowedJacobi(self.degree_order(), block_size or DEFAULT_WINDOW)
        x, iterations, steps = yield from solver.solve(noise)
        self.fast_macs += solver.macs(steps)  # the window is shared by the batch: every row did every window
        return x, iterations

    def evaluate(self, x: torch.Tensor, noise: torch.Tensor, cache: Any = None, slots: torch.Tensor | None = None,
                 span: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        return (noise < torch.sigmoid(self.model(x))).to(x.dtype)

    def evaluate_split(self, x: torch.Tensor, noise: torch.Tensor, cache: Any = None,
                       slots: torch.Tensor | None = None, span: torch.Tensor | None = None,
                       ) -> torch.Tensor:  # fmt: skip
        """Hidden path lagged (one pass on x), direct path solved in raster order: rows in turn, each to its
        fixed point. (N, D) -> (N, D)."""
        model = self.model
        assert model.direct is not None
        hidden = model.hidden_logits(x)
        weight, bias = model.direct_weight(), model.direct.bias
        width = self.block_size
        y = x.clone()
        for start in range(0, self.unknowns, width):
            cols = slice(start, start + width)
            above = y[:, :start] @ weight[cols, :start].T  # exact: binary inputs, fixed-point weights
            row_weight = weight[cols, cols].T
            current = x[:, cols]
            for _ in range(width):  # strictly lower inside the row: at most `width` sweeps
                self.direct_sweeps += 1
                logits = hidden[:, cols] + ((above + current @ row_weight) + bias[cols])
                new = (noise[:, cols] < torch.sigmoid(logits)).to(x.dtype)
                if torch.equal(new, current):
                    break
                current = new
            y[:, cols] = current
        return y

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.image_shape).to(torch.long)
