"""A latency model from the device: per-layer tables over channel counts, predicting a candidate's speed-up.

A candidate's architecture is known before any fine-tuning, and in the spaces
that change shapes, what changes is the width of inner groups (``sensitivity.
inner_groups``: a block's inner width, which no residual add couples). So the
device is asked once, up front, how each group's layers take longer or shorter
as its width changes:

- ``levels`` copies of the baseline are built with every inner group at the
  same fraction of its filters (level k of K keeps ``round(C * k / K)`` of C,
  at least one), so a group of 64 filters is measured at every width when K is
  64, and one of 16 at each width four times;
- each copy is profiled on the device interleaved with the baseline
  (``device.profile``); per group, the time of every node whose module the
  group's width changes (its convolutions, the ones reading them, what is fused
  into them) is summed, and divided by the same sum in the baseline profiled
  beside it, so that a drifting machine cancels out;
- those ratios, per group and width, are the group's latency staircase
  (``round_to`` effects included: every width of a 64-filter group is a point).

A candidate's time is then the baseline's layers with each group's share scaled
by its ratio at the candidate's width (the median of its measurements, or the
straight line between the nearest measured widths), plus the runtime's own work
between layers, which filter pruning leaves as it is (the baseline's profiled
inference minus its layers). The speed-up predicted is the baseline's time over
that. An architecture whose shapes changed anywhere else (a residual group, a
shortcut) is outside what the tables hold: ``predict`` says so (``None``).

>>> model = LatencyModel.build(baseline, example, on_device(runner, example))  # doctest: +SKIP
>>> model.predict(pruned)  # 1.43: the speed-up the device would measure, without compiling it   # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import copy
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

__all__ = ["GroupTable", "LatencyModel", "conv_shapes", "group_widths", "on_device"]


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

    def ratio(self, width: int) -> float:
        """The group's time at ``width`` over its time in the baseline."""
        if width >= self.channels:
            return 1.0
        if width in self.points:
            return statistics.median(self.points[width])
        widths = sorted(self.points)
        i = bisect.bisect_left(widths, width)
        lo = widths[i - 1] if i > 0 else None
        hi = widths[i] if i < len(widths) else self.channels
        r_hi = statistics.median(self.points[hi]) if hi in self.points else 1.0
        if lo is None:
            return r_hi
        r_lo = statistics.median(self.points[lo])
        return r_lo + (r_hi - r_lo) * (width - lo) / (hi - lo)


@dataclass
class LatencyModel:
    groups: dict[str, GroupTable]  # by the group's first convolution
    shapes: dict[str, tuple[int, int]]  # the baseline's convolutions
    rest_ms: float  # layers no group changes
    overhead_ms: float  # the runtime's own work per inference, outside every layer
    levels: int
    build_s: float  # wall time of the build, device time included

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

    def predict_ms(self, model: nn.Module) -> float | None:
        """The candidate's time per inference, profiled-layer scale; None if the tables do not cover it."""
        if not self.covers(model):
            return None
        widths = group_widths(model, self.groups)
        return (
            self.rest_ms
            + self.overhead_ms
            + sum(t.baseline_ms * t.ratio(widths.get(g, t.channels)) for g, t in self.groups.items())
        )

    def predict(self, model: nn.Module) -> float | None:
        """The candidate's speed-up over the baseline; None if the tables do not cover its architecture."""
        ms = self.predict_ms(model)
        return None if ms is None else self.baseline_ms / ms

    @classmethod
    def build(
        cls,
        baseline: nn.Module,
        example: torch.Tensor,
        benchmark: Callable[[nn.Module], Any],
        levels: int = 64,
        log: Callable[[str], None] = lambda _: None,
    ) -> LatencyModel:
        """Measure the tables: ``levels`` copies of ``baseline``, each profiled interleaved with it by
        ``benchmark`` (a pruned model to its ``LatencyResult``: ``DeviceRunner.benchmark`` of its ONNX, whose
        baseline is ``baseline``; ``on_device`` makes one)."""
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
        for k in range(1, levels):
            pruned = copy.deepcopy(baseline)
            specs = [
                PrunerSpec(f"level{k}", "L1RankedStructureParameterPruner", "Filters", 1 - _keep(t.channels, k, levels)
                           / t.channels, t.members)
                for t in tables.values()
                if _keep(t.channels, k, levels) < t.channels
            ]  # fmt: skip
            apply_pruners(pruned, specs, example)
            result = benchmark(pruned)
            cand, base = _by_group(result.layers, owner), _by_group(result.baseline_layers, owner)
            widths = group_widths(pruned, tables)
            for g, t in tables.items():
                if base.get(g, 0.0) > 0 and widths[g] < t.channels:
                    t.points.setdefault(widths[g], []).append(cand.get(g, 0.0) / base[g])
                base_sums[g].append(base.get(g, 0.0))
            rest.append(base.get("", 0.0))
            overhead.append(result.baseline_profiled_ms * (1 - result.baseline_layers_share))
            log(f"level {k}/{levels - 1}: widths {sorted(set(widths.values()))[:4]}... measured")
        for g, t in tables.items():
            t.baseline_ms = statistics.median(base_sums[g]) if base_sums[g] else 0.0
        return cls(
            groups=tables,
            shapes=shapes,
            rest_ms=statistics.median(rest) if rest else 0.0,
            overhead_ms=statistics.median(overhead) if overhead else 0.0,
            levels=levels,
            build_s=time.perf_counter() - start,
        )


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
