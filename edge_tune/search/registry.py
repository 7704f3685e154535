"""The searcher plug point: a name, a one-line description, and a factory from ``SearchSettings``.

A searcher module registers itself::

    @register_searcher("random", "independent uniform draws")
    def _random(s: SearchSettings) -> Searcher:
        return RandomSearch(s.params, seed=s.seed)

``--searcher`` takes its choices and help from ``SEARCHERS``; nothing else lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_tune.errors import UserError
from edge_tune.params import Param

__all__ = ["SEARCHERS", "SearchSettings", "SearcherEntry", "make_searcher", "register_searcher"]


@dataclass(frozen=True)
class SearchSettings:
    params: dict[str, Param]  # the space's searched parameters
    initial_points: int = 4  # trials before a model proposes
    seed: int = 0
    num_samples: int = 16  # trials in the whole search (the sweep spreads over them)
    constrained: bool = True  # False for the combined objective: no constraint model
    screen: int = 48  # sieve: candidates screened before the first fine-tune (a quarter as many before each later)
    aim: float = 0.0  # sieve: points above the threshold its models aim a top-1 at (confirmation's margin, confirm.aim)


@dataclass(frozen=True)
class SearcherEntry:
    about: str  # one line for --help and the README
    factory: Callable[[SearchSettings], Any]  # -> a Ray Tune Searcher


SEARCHERS: dict[str, SearcherEntry] = {}


def register_searcher(name: str, about: str) -> Callable[[Callable[[SearchSettings], Any]], Callable[..., Any]]:
    def add(factory: Callable[[SearchSettings], Any]) -> Callable[[SearchSettings], Any]:
        SEARCHERS[name] = SearcherEntry(about, factory)
        return factory

    return add


def make_searcher(name: str, settings: SearchSettings) -> Any:
    """A searcher by name; an unknown name is a user error listing the known ones."""
    entry = SEARCHERS.get(name)
    if entry is None:
        raise UserError(f"--searcher {name}: unknown; choose one of {', '.join(SEARCHERS)}")
    return entry.factory(settings)
