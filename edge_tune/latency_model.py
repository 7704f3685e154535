"""A latency model from the device: per-layer tables over channel counts, predicting a candidate's speed-up.

A candidate's architecture is known before any fine-tuning, and in the spaces
that change shapes, what changes is the width of inner groups (``sensitivity.
inner_groups``: a block's inner width, which no residual add couples). So the
device is asked once, up front, how each group's layers take longer or shorter
as its width changes:

- K - 1 copies of the baseline are built (K is ``levels``), and each inner
  group goes through every fraction k / K of its filters once (``round(C * k /
  K)`` of C kept, at least one), each group in its own shuffled order: a group
  of 64 filters is measured at every width when K is 64, one of 16 at each
  width four times, and always beside groups at other widths, as in a
  per-block candidate;
- each copy is profiled on the device interleaved with the baseline
  (``device.profile``); per group, the time of every node whose module the
  group's width changes (its convolutions, the ones reading them, what is fused
  into them) is summed, and divided by the same sum in the baseline profiled
  beside it, so that a drifting machine cancels out;
- those ratios, per group and width, are the group's latency staircase
  (``round_to`` effects included: every width of a 64-filter group is a point).

A layer's time depends also on the model around it: the same convolution runs
faster in a copy shrunk as a whole than beside full-width layers (less to keep
in cache). So the levels are measured in two designs: the shuffled one above,
where every copy keeps about half of the model, and a uniform one, where copy k
puts every group at k / K and so spans every size. Each copy's *context* is the
share of the groups' filters it keeps, weighted by the groups' time (1 in the
baseline). The same width of a group measured in both designs, in different
contexts, gives one context term for the whole model: log ratio = log r(width)
+ beta * (context - 1), beta fitted by least squares within each (group, width)
(``fit_context``). The tables keep each ratio with its copy's context; a
prediction brings them back to the baseline's context and puts them in the
candidate's.

A candidate's time is then the baseline's layers with each group's share scaled
by its ratio at the candidate's width (the median of its measurements, or the
straight line between the nearest measured widths) and by the context term,
plus a constant: the runtime's own work between layers, which filter pruning
leaves as it is. The
speed-up predicted is the baseline's time over that. The constant is not read
off a profile (a profiled inference spends more than an unprofiled one between
layers and inside them), but fitted so that the levels' predicted speed-ups
match the ones the device measured for those same levels, end to end and
without counters: the build calibrates itself on its own measurements.

An architecture whose shapes changed anywhere else (a residual group, a
shortcut) is outside what the tables hold: ``predict`` says so (``None``).

>>> model = LatencyModel.build(baseline, example, on_device(runner, example))  # doctest: +SKIP
>>> model.predict(pruned)  # 1.43: the speed-up the device would measure, without compiling it   # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import copy
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners
from edge_tune.device.profile import LayerTiming
from edge_tune.export import to_onnx
from edge_tune.sensitivity import inner_groups

__all__ = [
    "GroupTable",
    "LatencyModel",
    "context_of",
    "conv_shapes",
    "fit_context",
    "fit_overhead",
    "group_widths",
    "on_device",
    "within_cell",
]


def conv_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every convolution's (out channels, in channels) by module name."""
    return {n: (m.out_channels, m.in_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def group_widths(model: nn.Module, groups: dict[str, GroupTable]) -> dict[str, int]:
    """Each group's width in ``model``: its first convolution's filters."""
    shapes = conv_shapes(model)
    return {g: shapes[g][0] for g in groups if g in shapes}


@dataclass
class GroupTable:
    """One inner group's latency staircase: its layers' time, over the baseline's, at each width measured."""

    members: tuple[str, ...]  # the convolutions whose filters it removes together
    affected: tuple[str, ...]  # every module whose shape follows its width (members and their readers)
    channels: int  # its width in the baseline
    baseline_ms: float  # its layers' time in the baseline (median over the build's profiles)
    points: dict[int, list[float]] = field(default_factory=dict)  # width -> ratios measured
    contexts: dict[int, list[float]] = field(default_factory=dict)  # width -> each ratio's copy's context

    def at(self, width: int, beta: float = 0.0) -> float:
        """The median ratio measured at ``width``, each brought back to the baseline's context by ``beta``
        (a ratio without a recorded context was measured in the baseline's)."""
        ctx = self.contexts.get(width, [])
        return statistics.median(
            r * math.exp(-beta * ((ctx[i] if i < len(ctx) else 1.0) - 1)) for i, r in enumerate(self.points[width])
        )

    def ratio(self, width: int, beta: float = 0.0) -> float:
        """The group's time at ``width`` over its time in the baseline, in the baseline's context."""
        if width >= self.channels:
            return 1.0
        if width in self.points:
            return self.at(width, beta)
        widths = sorted(self.points)
        i = bisect.bisect_left(widths, width)
        lo = widths[i - 1] if i > 0 else None
        hi = widths[i] if i < len(widths) else self.channels
        r_hi = self.at(hi, beta) if hi in self.points else 1.0
        if lo is None:
            return r_hi
        r_lo = self.at(lo, beta)
        return r_lo + (r_hi - r_lo) * (width - lo) / (hi - lo)


@dataclass
class LatencyModel:
    groups: dict[str, GroupTable]  # by the group's first convolution
    shapes: dict[str, tuple[int, int]]  # the baseline's convolutions
    rest_ms: float  # layers no group changes
    overhead_ms: float  # the constant beside the layers, fitted to the levels' end-to-end speed-ups
    levels: int
    build_s: float  # wall time of the build, device time included
    profiled_overhead_ms: float = 0.0  # what the profiles leave outside the layers (before the fit; for reports)
    context_beta: float = 0.0  # the context term: a group's log time grows by beta * (context - 1)
    designs: tuple[str, ...] = ("uniform", "shuffled")

    @property
    def baseline_ms(self) -> float:
        return self.rest_ms + self.overhead_ms + sum(t.baseline_ms for t in self.groups.values())

    def covers(self, model: nn.Module) -> bool:
        """Whether every shape that differs from the baseline's is one an inner group's width explains."""
        shapes = conv_shapes(model)
        if set(shapes) != set(self.shapes):
            return False
        affected = {m: g for g, t in self.groups.items() for m in t.affected}
        return all(shape == self.shapes[m] or m in affected for m, shape in shapes.items())

    def context(self, model: nn.Module) -> float:
        """The share of the groups' filters ``model`` keeps, weighted by their time in the baseline."""
        return self._context(group_widths(model, self.groups))

    def _context(self, widths: dict[str, int]) -> float:
        return context_of({g: (widths.get(g, t.channels), t.channels, t.baseline_ms) for g, t in self.groups.items()})

    def predict_ms(self, model: nn.Module, overhead_ms: float | None = None, context: bool = True) -> float | None:
        """The candidate's time per inference, profiled-layer scale; None if the tables do not cover it."""
        if not self.covers(model):
            return None
        widths = group_widths(model, self.groups)
        o = self.overhead_ms if overhead_ms is None else overhead_ms
        beta = self.context_beta if context else 0.0
        scale = math.exp(beta * (self._context(widths) - 1))
        groups = sum(t.baseline_ms * t.ratio(widths.get(g, t.channels), beta) for g, t in self.groups.items())
        return self.rest_ms + o + groups * scale

    def predict(self, model: nn.Module, overhead_ms: float | None = None, context: bool = True) -> float | None:
        """The candidate's speed-up over the baseline; None if the tables do not cover its architecture.
        ``overhead_ms``: another constant than the fitted one; ``context=False``: the same measurements
        without the context term, as if beta were 0 (both to compare)."""
        ms = self.predict_ms(model, overhead_ms, context)
        if ms is None:
            return None
        o = self.overhead_ms if overhead_ms is None else overhead_ms
        return (self.baseline_ms - self.overhead_ms + o) / ms

    @classmethod
    def build(
        cls,
        baseline: nn.Module,
        example: torch.Tensor,
        benchmark: Callable[[nn.Module], Any],
        levels: int = 64,
        log: Callable[[str], None] = lambda _: None,
        seed: int = 0,
        designs: tuple[str, ...] = ("uniform", "shuffled"),
    ) -> LatencyModel:
        """Measure the tables: ``levels`` - 1 copies of ``baseline`` in each of ``designs``, each profiled
        interleaved with it by ``benchmark`` (a pruned model to its ``LatencyResult``: ``DeviceRunner.benchmark``
        of its ONNX, whose baseline is ``baseline``; ``on_device`` makes one). With one design only, there is
        no context term (beta 0): the tables hold that design's context."""
        if not designs or not set(designs) <= {"uniform", "shuffled"}:
            raise ValueError(f"designs: {designs!r}; each one of 'uniform', 'shuffled'")
        start = time.perf_counter()
        baseline = copy.deepcopy(baseline).eval()
        shapes = conv_shapes(baseline)
        groups = inner_groups(baseline, example)
        tables = {g[0]: GroupTable(g, _affected(baseline, example, g), shapes[g[0]][0], 0.0) for g in groups}
        owner = {m: g for g, t in tables.items() for m in t.affected}
        levels = min(levels, max(t.channels for t in tables.values())) if tables else 0
        base_sums: dict[str, list[float]] = {g: [] for g in tables}
        rest: list[float] = []
        overhead: list[float] = []
        fit: list[tuple[float, float, float]] = []  # per level: layers of baseline and copy, speed-up measured
        seen: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (group, width) -> (context, ratio)
        # In each design every group goes through every level once. Shuffled: each group in its own order,
        # so always beside groups at other widths, as in a per-block candidate, and each copy keeps about
        # half. Uniform: every group at the same level, so the copies shrink as a whole, as a per-stage
        # candidate does. Alone, either design's tables carry its context (uniform over-predicted
        # per-block candidates of ResNet-56 by a median 10 %; shuffled under-predicted per-stage ones).
        rng = random.Random(seed)
        shuffled = {g: rng.sample(range(1, levels), levels - 1) for g in tables}
        uniform = {g: list(range(1, levels)) for g in tables}
        runs = [(d, k) for d in designs for k in range(1, levels)]
        for i, (design, k) in enumerate(runs, 1):
            order = uniform if design == "uniform" else shuffled
            pruned = copy.deepcopy(baseline)
            keep = {g: _keep(t.channels, order[g][k - 1], levels) for g, t in tables.items()}
            specs = [
                PrunerSpec(f"level{k}", "L1RankedStructureParameterPruner", "Filters", 1 - keep[g] / t.channels,
                           t.members)
                for g, t in tables.items()
                if keep[g] < t.channels
            ]  # fmt: skip
            apply_pruners(pruned, specs, example)
            result = benchmark(pruned)
            cand, base = _by_group(result.layers, owner), _by_group(result.baseline_layers, owner)
            widths = group_widths(pruned, tables)
            ctx = context_of({g: (widths[g], t.channels, base.get(g, 0.0)) for g, t in tables.items()})
            for g in tables:
                if base.get(g, 0.0) > 0:
                    seen.setdefault((g, widths[g]), []).append((ctx, cand.get(g, 0.0) / base[g]))
                base_sums[g].append(base.get(g, 0.0))
            rest.append(base.get("", 0.0))
            overhead.append(result.baseline_profiled_ms * (1 - result.baseline_layers_share))
            fit.append((sum(base.values()), sum(cand.values()), result.speedup))
            log(f"{design} level {k}/{levels - 1} ({i}/{len(runs)}): speed-up {result.speedup:.3f}x measured")
        beta = fit_context(list(seen.values())) if len(designs) > 1 else 0.0
        for (g, width), obs in seen.items():
            if width < tables[g].channels:  # as measured; ``ratio`` brings them back to the baseline's context
                tables[g].points[width] = [r for _, r in obs]
                tables[g].contexts[width] = [c for c, _ in obs]
        for g, t in tables.items():
            t.baseline_ms = statistics.median(base_sums[g]) if base_sums[g] else 0.0
        return cls(
            groups=tables,
            shapes=shapes,
            rest_ms=statistics.median(rest) if rest else 0.0,
            overhead_ms=fit_overhead(fit),
            levels=levels,
            build_s=time.perf_counter() - start,
            profiled_overhead_ms=statistics.median(overhead) if overhead else 0.0,
            context_beta=beta,
            designs=tuple(designs),
        )


def context_of(groups: dict[str, tuple[int, int, float]]) -> float:
    """A copy's context: the share of the groups' filters it keeps, each group (width, channels, time in
    the baseline) weighted by its time; 1.0 for the baseline (and where no group has a time)."""
    total = sum(ms for _, _, ms in groups.values())
    if total <= 0:
        return 1.0
    return sum(ms * min(w / c, 1.0) for w, c, ms in groups.values()) / total


def within_cell(obs: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """One cell's (context, ratio) observations as (context, context - the cell's mean, log ratio - the
    cell's mean log); empty for a cell of fewer than two positive ratios, which says nothing."""
    pts = [(c, math.log(r)) for c, r in obs if r > 0]
    if len(pts) < 2:
        return []
    mc = statistics.fmean(c for c, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    return [(c, c - mc, y - my) for c, y in pts]


def fit_context(cells: list[list[tuple[float, float]]]) -> float:
    """beta in log ratio = a(cell) + beta * context, by least squares within each cell: a cell is one
    group at one width, its (context, ratio) observations; cells measured in one context say nothing."""
    centred = [p for obs in cells for p in within_cell(obs)]
    den = sum(dc**2 for _, dc, _ in centred)
    return sum(dc * dy for _, dc, dy in centred) / den if den > 1e-12 else 0.0


def fit_overhead(levels: list[tuple[float, float, float]], steps: int = 400) -> float:
    """The constant o for which (B + o) / (C + o) best matches each level's measured speed-up S, in
    squared log error; levels are (B, C, S): the layers' sums of baseline and copy, profiled side by side.
    Searched from -min(C) / 2 (profiling inflating the layers more than the runtime adds) to 10 max(B):
    a grid, then golden sections in the best cell."""
    usable = [(b, c, s) for b, c, s in levels if b > 0 and c > 0 and s > 0 and abs(b - c) > 1e-9]
    if not usable:
        return 0.0
    lo, hi = -0.5 * min(c for _, c, _ in usable), 10 * max(b for b, _, _ in usable)

    def loss(o: float) -> float:
        return sum((math.log((b + o) / (c + o)) - math.log(s)) ** 2 for b, c, s in usable)

    step = (hi - lo) / steps
    best = min((lo + step * i for i in range(1, steps + 1)), key=loss)  # lo itself may be -C / 2 exactly
    a, b = max(best - step, lo + 1e-12), min(best + step, hi)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
        if loss(x1) <= loss(x2):
            b = x2
        else:
            a = x1
    return (a + b) / 2


def on_device(runner: Any, example: torch.Tensor) -> Callable[[nn.Module], Any]:
    """``build``'s ``benchmark`` on a ``DeviceRunner``: the model's ONNX, timed and profiled."""
    return lambda model: runner.benchmark(to_onnx(model, example))


def _keep(channels: int, k: int, levels: int) -> int:
    return max(1, round(channels * k / levels))


def _affected(model: nn.Module, example: torch.Tensor, members: tuple[str, ...]) -> tuple[str, ...]:
    """The modules whose shapes change when this group alone loses half its filters."""
    pruned = copy.deepcopy(model)
    apply_pruners(pruned, [PrunerSpec("probe", "L1RankedStructureParameterPruner", "Filters", 0.5, members)], example)
    before, after = conv_shapes(model), conv_shapes(pruned)
    return tuple(m for m in before if before[m] != after[m])


def _by_group(layers: tuple[LayerTiming, ...], owner: dict[str, str]) -> dict[str, float]:
    """Per group, the time of the nodes its width changes; ``""`` holds every other node."""
    out: dict[str, float] = {}
    for lt in layers:
        g = owner.get(lt.module, "")
        out[g] = out.get(g, 0.0) + lt.time_ms
    return out
