"""Searched parameters and their types: each type owns its parsing, sampling, diagonal and conversions.

A space file's ``params`` become ``Param`` objects; searchers, the sweep and
the study ask a ``Param`` (and through it its ``ParamType``) for values, so no
code elsewhere switches on ``float``/``int``/``choice``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PARAM_TYPES", "ChoiceType", "FloatType", "IntType", "Param", "ParamType", "uniform_point"]


class ParamType:
    """One kind of searched parameter: how it is parsed, sampled, placed on the diagonal and handed to
    each optimiser. A new kind is a subclass registered in ``PARAM_TYPES``; nothing else switches on kinds.

    >>> PARAM_TYPES["int"].at_fraction(Param("w", "int", 1, 4), 0.5, 0)
    2
    """

    keys: tuple[str, ...] = ()  # the keys of its spec besides ``type``

    def parse(self, name: str, spec: dict[str, Any], where: str) -> Param:
        raise NotImplementedError

    def sample(self, p: Param, rng: np.random.Generator) -> Any:
        """A uniform draw."""
        raise NotImplementedError

    def at_fraction(self, p: Param, t: float, k: int) -> Any:
        """The value at fraction ``t`` of the range; a choice takes value ``k`` in turn."""
        raise NotImplementedError

    def typed(self, p: Param, raw: Any) -> Any:
        """An optimiser's raw value (numpy scalar, float for an int) as this type's Python value."""
        raise NotImplementedError

    def corner(self, p: Param, side: str) -> Any:
        raise NotImplementedError

    def midpoint(self, p: Param) -> Any:
        """The middle of the range; a choice's first value."""
        return self.at_fraction(p, 0.5, 0)

    def clamp(self, p: Param, ratio: float) -> Any:
        """The paradigm study's value for a nominal ``ratio``: only a float range holds ratios; others stay low."""
        return self.corner(p, "low")

    def to_tune(self, p: Param) -> Any:
        raise NotImplementedError

    def bo_bounds(self, p: Param) -> Any:
        """bayes_opt 3.x bounds."""
        raise NotImplementedError

    def optuna(self, p: Param) -> Any:
        """Optuna's distribution."""
        raise NotImplementedError


class _Numeric(ParamType):
    keys = ("low", "high")

    def parse(self, name: str, spec: dict[str, Any], where: str) -> Param:
        kind = spec["type"]
        low, high = spec.get("low"), spec.get("high")
        for key, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{where}.{key}: must be a number, got {v!r}")
            if kind == "int" and not float(v).is_integer():
                raise ValueError(f"{where}.{key}: an int param needs whole bounds, got {v!r}")
        assert isinstance(low, (int, float)) and isinstance(high, (int, float))
        if not low < high:
            raise ValueError(f"{where}: low ({low}) must be below high ({high})")
        return Param(name, kind, float(low), float(high))

    def at_fraction(self, p: Param, t: float, k: int) -> Any:
        return self.typed(p, p.low + t * (p.high - p.low))

    def corner(self, p: Param, side: str) -> Any:
        return self.typed(p, p.low if side == "low" else p.high)


class FloatType(_Numeric):
    def sample(self, p: Param, rng: np.random.Generator) -> Any:
        return float(rng.uniform(p.low, p.high))

    def at_fraction(self, p: Param, t: float, k: int) -> Any:
        return round(p.low + t * (p.high - p.low), 10)

    def typed(self, p: Param, raw: Any) -> Any:
        return float(raw)

    def clamp(self, p: Param, ratio: float) -> Any:
        return min(max(ratio, p.low), p.high)

    def to_tune(self, p: Param) -> Any:
        from ray import tune

        return tune.uniform(p.low, p.high)

    def bo_bounds(self, p: Param) -> Any:
        return (float(p.low), float(p.high))

    def optuna(self, p: Param) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(p.low, p.high)


class IntType(_Numeric):
    def sample(self, p: Param, rng: np.random.Generator) -> Any:
        return int(rng.integers(int(p.low), int(p.high) + 1))

    def typed(self, p: Param, raw: Any) -> Any:
        return round(float(raw))

    def midpoint(self, p: Param) -> Any:
        return int((p.low + p.high) // 2)

    def to_tune(self, p: Param) -> Any:
        from ray import tune

        return tune.randint(int(p.low), int(p.high) + 1)  # randint's upper bound is exclusive

    def bo_bounds(self, p: Param) -> Any:
        return (int(p.low), int(p.high), int)

    def optuna(self, p: Param) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(int(p.low), int(p.high))


class ChoiceType(ParamType):
    keys = ("values",)

    def parse(self, name: str, spec: dict[str, Any], where: str) -> Param:
        values = spec.get("values")
        if not isinstance(values, list) or len(values) < 2:
            raise ValueError(f"{where}.values: a choice needs a list of at least two values")
        return Param(name, "choice", values=tuple(values))

    def sample(self, p: Param, rng: np.random.Generator) -> Any:
        return p.values[int(rng.integers(len(p.values)))]

    def at_fraction(self, p: Param, t: float, k: int) -> Any:
        return p.values[k % len(p.values)]

    def typed(self, p: Param, raw: Any) -> Any:
        return raw.item() if isinstance(raw, np.generic) else raw

    def corner(self, p: Param, side: str) -> Any:
        return p.values[0 if side == "low" else -1]

    def to_tune(self, p: Param) -> Any:
        from ray import tune

        return tune.choice(list(p.values))

    def bo_bounds(self, p: Param) -> Any:
        return list(p.values)

    def optuna(self, p: Param) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(p.values))


PARAM_TYPES: dict[str, ParamType] = {"float": FloatType(), "int": IntType(), "choice": ChoiceType()}


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``float`` or ``int`` in [low, high], or a ``choice`` of values.

    Its behaviour is its type's (``PARAM_TYPES[type]``)."""

    name: str
    type: str  # a key of PARAM_TYPES: float | int | choice
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()

    @property
    def kind(self) -> ParamType:
        return PARAM_TYPES[self.type]

    def to_tune(self) -> Any:
        return self.kind.to_tune(self)

    def bo_bounds(self) -> Any:
        """bayes_opt 3.x bounds: (lo, hi) float, (lo, hi, int), or a list of categories."""
        return self.kind.bo_bounds(self)

    def optuna(self) -> Any:
        return self.kind.optuna(self)

    def corner(self, side: str) -> Any:
        return self.kind.corner(self, side)

    def midpoint(self) -> Any:
        """The middle of the range (ints rounded down); a choice's first value."""
        return self.kind.midpoint(self)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.kind.sample(self, rng)

    def at_fraction(self, t: float, k: int = 0) -> Any:
        return self.kind.at_fraction(self, t, k)

    def typed(self, raw: Any) -> Any:
        return self.kind.typed(self, raw)

    def clamp(self, ratio: float) -> Any:
        return self.kind.clamp(self, ratio)


def uniform_point(params: dict[str, Param], t: float, k: int) -> dict[str, Any]:
    """Every float and int parameter at fraction ``t`` of its range (ints rounded); choice ``k`` in turn."""
    return {name: p.at_fraction(t, k) for name, p in params.items()}
