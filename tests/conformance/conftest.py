"""Test-only search spaces and a synthetic evaluator for the algorithm conformance tests.

``search_spaces`` registers two tiny spaces in ``kfnas.spaces.SPACES`` for the session and removes
them afterwards. It registers them when first requested, after collection, so tests parametrised
over the registered spaces never see them. ``evaluator`` scores a DNA without training anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pyglove as pg
import pytest

from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import materialize

Evaluator = Callable[[str, pg.DNA], tuple[float, tuple[float, float]]]


@dataclasses.dataclass(frozen=True)
class ToySpace:
    """A search space of plain PyGlove choices (kernel, width, depth), for tests only."""

    name: str
    choices: dict[str, tuple[int, ...]]
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return pg.Dict({key: pg.oneof(list(values)) for key, values in self.choices.items()})


SMALL = ToySpace(
    "conformance_small", {"kernel": (3, 5, 7), "width": (16, 32, 64), "depth": (1, 2, 3, 4)}
)
TINY = ToySpace("conformance_tiny", {"kernel": (3, 5, 7), "width": (16, 64)})


def evaluate(space_name: str, dna: pg.DNA) -> tuple[float, tuple[float, float]]:
    """A deterministic stand-in for training: (reward, (accuracy-like, -latency-like)).

    The reward peaks (at 2.0) for kernel 5, width 64, depth 4. The objectives trade quality against
    a latency that grows with kernel x width x depth, so NSGA-II has a real front to find.
    """
    arch = materialize(get_space(space_name), dna)
    kernel, width, depth = arch["kernel"], arch["width"], arch.get("depth", 1)
    reward = -abs(kernel - 5) + width / 64 + depth / 4
    accuracy = width / 64 + depth / 4 - abs(kernel - 5) / 2
    latency = kernel * width * depth / 1000
    return reward, (accuracy, -latency)


@pytest.fixture(scope="session")
def search_spaces() -> Iterator[tuple[ToySpace, ToySpace]]:
    """Registers a 36-point space and a 6-point space (for exhaustion) for the session."""
    for space in (SMALL, TINY):
        SPACES.register(space.name, space)
    yield SMALL, TINY
    for space in (SMALL, TINY):
        SPACES.unregister(space.name)


@pytest.fixture(scope="session")
def evaluator() -> Evaluator:
    """The synthetic evaluator, ``(space name, dna) -> (reward, objectives)``."""
    return evaluate
