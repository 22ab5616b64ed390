"""Solvers in pieces: every solver here is a generator that yields between bounded pieces of work.

A caller that has other work (a server interleaving requests, a deadline to respect) advances the generator one
piece at a time and may stop it between pieces (``close()`` releases its tensors). ``drain`` runs one to its end:
the plain function form of every solver (``solve`` is ``drain(solving(...))``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

Y = TypeVar("Y")
R = TypeVar("R")


def drain(pieces: Generator[Y, None, R], callback: Callable[[Y], None] | None = None) -> R:
    """Run a piecewise solver to its end and return its result; ``callback`` sees what each piece yields."""
    while True:
        try:
            state = next(pieces)
        except StopIteration as done:
            result: R = done.value
            return result
        if callback is not None:
            callback(state)
