"""The registry of model families: the built-in ones (one module each here) and those plugins add.

``get_family(kind)`` maps a manifest entry's "kind" to its family; ``task_methods(task)`` lists every method any
family offers for a task, which is what request schemas and CLI choices accept (a model's own list is narrower;
its family checks it). Plugins register through ``samplers.plugins``.
"""

from __future__ import annotations

from samplers.families.densenet import DenseNetFamily
from samplers.families.made import MadeFamily
from samplers.families.pixelcnnpp import PixelCNNppFamily
from samplers.families.recurrent import GRUFamily, OrthogonalFamily, RNNFamily
from samplers.family import Family

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (MadeFamily(), PixelCNNppFamily(), DenseNetFamily(), RNNFamily(), GRUFamily(), OrthogonalFamily())
}
BUILT_IN = tuple(FAMILIES)


class UnknownFamilyError(KeyError):
    """A manifest entry whose kind no built-in family or installed plugin serves."""


def register(family: Family) -> None:
    """Add a plugin's family; a built-in family's name cannot be taken."""
    if family.name in BUILT_IN:
        raise ValueError(f"a plugin cannot replace the built-in family {family.name!r}")
    FAMILIES[family.name] = family


def get_family(kind: str) -> Family:
    if kind not in FAMILIES:
        raise UnknownFamilyError(f"no family serves model kind {kind!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[kind]


def task_methods(task: str) -> tuple[str, ...]:
    """Every method some family offers for ``task`` ("auto" aside), in a stable order."""
    methods: dict[str, None] = {}
    for family in FAMILIES.values():
        if task in family.offers:
            methods.update(dict.fromkeys(family.offers[task].methods))
    return tuple(methods)
