"""Fair sharing of a worker between its lanes: deficit round robin by measured cost (Shreedhar & Varghese 1996).

A lane is whatever advances in steps: the row batch of one model and step (one solver iteration per step), or
the sliced jobs of one task and model (one slice per step). The lane at the head of the order is served while it
has credit; each step is charged its measured wall time; a lane out of credit goes to the back and the next one
gets ``quantum`` seconds more. A step that overran leaves a debt that the lane works off over later rounds. So
every busy lane gets an equal share of the worker's time whatever its steps cost: a lane of 100 ms gradient
slices cannot starve a lane of 1 ms sampling iterations, and a lane that empties loses its credit.

A lane that was idle joins at the front, with one quantum (the sparse-flow priority of FQ-CoDel, RFC 8290): a
short request arriving at a busy worker waits for the step in progress, not for a round of everybody else's.

No torch here: lanes are keys, costs are seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable


class DeficitRoundRobin:
    def __init__(self, quantum_s: float) -> None:
        self.quantum = quantum_s
        self.credit: dict[Hashable, float] = {}
        self.order: deque[Hashable] = deque()

    def pick(self, busy: Iterable[Hashable]) -> Hashable | None:
        """The lane to serve next among the busy ones (None: none is busy)."""
        busy = set(busy)
        for key in [k for k in self.order if k not in busy]:  # emptied lanes leave, and lose their credit
            self.order.remove(key)
            del self.credit[key]
        for key in busy - set(self.credit):  # lanes that were idle join at the front, with a quantum
            self.order.appendleft(key)
            self.credit[key] = self.quantum
        if not self.order:
            return None
        if max(self.credit.values()) <= 0:  # everybody in debt: a full round's worth of quanta to all at once
            rounds = -max(self.credit.values()) // self.quantum + 1
            for key in self.credit:
                self.credit[key] += rounds * self.quantum
        while self.credit[self.order[0]] <= 0:
            self.order.rotate(-1)
            self.credit[self.order[0]] += self.quantum
        return self.order[0]

    def charge(self, key: Hashable, seconds: float) -> None:
        """A step of ``key`` took ``seconds``."""
        if key in self.credit:
            self.credit[key] -= seconds
