"""Windowed cached Jacobi for MADE: Jacobi that recomputes only what can still change (issue 14 of this project;
Jacobi sampling after Song et al., ICML 2021, arXiv 2002.03629; degree order as in ``models.made_degrees``).

State, per batch: the final prefix g (x_{<g} is the sequential sample for every row) and accumulators holding
everything the final prefix contributes: each hidden unit's pre-activation from final inputs (first layer: x_{<g};
layer l: the units of layer l-1 with degree < g) and each logit's from final x and final last-layer units. Hidden
units of degree < g read final inputs only: they are computed once, when g passes them, and never again.

One iteration evaluates a window of W positions [g, g+W): the hidden units of degrees [g, g+W-1) from the
accumulators plus the window's own inputs, then the window's logits, then x = 1[u < sigmoid(logit)] on the window
(a Jacobi update). Where the new x agrees with the old, the old was computed from it: per row, the prefix up to the
first disagreement was input-correct, so g advances to the smallest such prefix over the rows (the window is
shared by the batch; a row ahead of it waits, a row done stays in until the batch is done). Every iteration
certifies at least one more position (as in Jacobi), so the batch is done after at most D iterations; the newly
final inputs are folded into the accumulators by rank-k updates, so the whole solve does about one forward pass
of arithmetic for the accumulators plus W-sized pieces per iteration.

Exactness: sums run in another order than the reference forward, so the result is a candidate, certified by one
evaluation of the reference map (``samplers.certify``). Shapes: noise (B, D); buffers (features, B).
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from models.made_degrees import DegreeOrder

DEFAULT_WINDOW = 224  # eight image rows of 28 pixels: fastest at batch 1 on made-fmnist (benchmarks/sampling.py)


class WindowedJacobi:
    def __init__(self, order: DegreeOrder, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.order, self.window = order, window
        self.layers = len(order.hidden)
        self.weights = [order.sorted_first, *order.between]  # layer l: (H_l, width of its input), sorted units

    def macs(self, steps: list[tuple[int, int]]) -> int:
        """Multiply-adds per row of a solve whose iterations had windows [g, e) = ``steps`` (accumulators: about
        one forward pass, counted in full)."""
        o = self.order
        accumulate = o.sorted_first.numel() + sum(w.numel() for w in o.between) + o.sorted_out.numel() + o.inputs**2
        window = 0
        for g, e in steps:
            units = [b[e] - b[g] for b in o.bounds]
            widths = [e - g, *units[:-1]]
            window += sum(u * w for u, w in zip(units, widths, strict=True)) + (e - g) * ((e - g) + units[-1])
        return accumulate + window

    def solve(
        self, noise: torch.Tensor
    ) -> Generator[None, None, tuple[torch.Tensor, list[int], list[tuple[int, int]]]]:
        """Sample ``noise`` (B, D); yields after each iteration. Returns x (B, D), each row's iterations (until
        its own positions were all final) and the windows [g, e) of the iterations."""
        o, d, batch, device = self.order, self.order.inputs, noise.shape[0], noise.device
        u = noise.T.contiguous()
        x = torch.zeros(d, batch, device=device)
        hidden = [torch.zeros(h, batch, device=device) for h in o.hidden]
        pre = [o.biases[k].unsqueeze(1).expand(-1, batch).clone() for k in range(self.layers)]
        logits = o.out_bias.unsqueeze(1).expand(-1, batch).clone()
        done_at = torch.zeros(batch, dtype=torch.long, device=device)
        g, gu, steps = 0, 0, []  # x_{<g} final and folded; hidden units of degree < gu final and folded
        while g < d:
            e = min(g + self.window, d)
            units = [(b[gu], b[e]) for b in o.bounds]  # degrees [gu, e): what the window's inputs reach
            source, (s_lo, s_hi) = x[g:e], (g, e)
            for layer in range(self.layers):
                lo, hi = units[layer]
                if hi > lo:
                    weight = self.weights[layer][lo:hi, s_lo:s_hi]
                    torch.addmm(pre[layer][lo:hi], weight, source, out=hidden[layer][lo:hi]).relu_()
                source, (s_lo, s_hi) = hidden[layer][lo:hi], (lo, hi)
            lo, hi = units[-1]
            window = torch.addmm(logits[g:e], o.direct[g:e, g:e], x[g:e])
            if hi > lo:
                window.addmm_(o.sorted_out[g:e, lo:hi], hidden[-1][lo:hi])
            new = (u[g:e] < torch.sigmoid(window)).to(x.dtype)
            differs = new != x[g:e]  # (W, B)
            x[g:e] = new
            steps.append((g, e))
            # per row: inputs before its first disagreement were right, so the units they reach are final, and
            # the first disagreeing position is final once written (its own inputs were right)
            first = torch.where(differs.any(0), torch.argmax(differs.to(torch.uint8), dim=0), e - g)
            final = torch.clamp(g + first + 1, max=e)
            done_at = torch.where((final >= d) & (done_at == 0), len(steps), done_at)
            g_new, gu_new = int(final.min()), int((g + first).min())
            self._fold(g, g_new, gu, gu_new, x, hidden, pre, logits)
            g, gu = g_new, gu_new
            yield
        done_at = torch.where(done_at == 0, len(steps), done_at)
        return x.T.contiguous(), done_at.tolist(), steps

    def _fold(self, g: int, g_new: int, gu: int, gu_new: int, x: torch.Tensor, hidden: list[torch.Tensor],
              pre: list[torch.Tensor], logits: torch.Tensor) -> None:  # fmt: skip
        """x_{[g, g_new)} and the hidden units of degrees [gu, gu_new) became final: add what they contribute to the
        accumulators of what is not (units of degree >= gu_new, logits >= g_new)."""
        o = self.order
        source, (s_lo, s_hi) = x[g:g_new], (g, g_new)
        for layer in range(self.layers):
            rest = o.bounds[layer][gu_new]
            if s_hi > s_lo and rest < o.hidden[layer]:
                pre[layer][rest:].addmm_(self.weights[layer][rest:, s_lo:s_hi], source)
            lo, hi = o.bounds[layer][gu], o.bounds[layer][gu_new]
            source, (s_lo, s_hi) = hidden[layer][lo:hi], (lo, hi)
        if g_new < o.inputs:
            if g_new > g:
                logits[g_new:].addmm_(o.direct[g_new:, g:g_new], x[g:g_new])
            lo, hi = o.bounds[-1][gu], o.bounds[-1][gu_new]
            if hi > lo:
                logits[g_new:].addmm_(o.sorted_out[g_new:, lo:hi], hidden[-1][lo:hi])
