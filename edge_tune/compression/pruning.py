"""Structured pruning on torch-pruning: channels are physically removed.

A Distiller ``L1RankedStructureParameterPruner`` names convolution weights
and a sparsity. Here each named convolution is mapped to its torch-pruning
dependency group (a residual add couples every convolution feeding it, so a
stage's ``conv2`` layers form one group); each group is pruned once, ranked by
the L1 norm of the named weights' filters (or input channels) summed over the
group's named members, which is what Distiller's ``group_dependency: Leader``
ranking did. Batch norms and the consumers' input channels follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from edge_tune.compression.schedule import PrunerSpec

__all__ = ["GroupPruned", "PruneReport", "apply_pruners", "count_macs_params", "resolve_weights"]


@dataclass(frozen=True)
class GroupPruned:
    pruner: str
    members: tuple[str, ...]  # the named convolutions in this dependency group
    group_type: str  # Filters | Channels
    channels_before: int
    channels_after: int


@dataclass(frozen=True)
class PruneReport:
    groups: tuple[GroupPruned, ...]
    macs_before: int  # multiply-accumulates for one image
    macs_after: int
    params_before: int
    params_after: int


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` for one image.

    MACs are the multiply-accumulates of convolutions and fully-connected
    layers, the usual definition; OpenVINO's graph is counted the same way
    (``device.engine.inspect_graph``) so the two can be required to agree.
    """
    macs = 0

    def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out[0].numel() * (mod.in_channels // mod.groups) * k  # (C_out, H, W) x (C_in/g x kh x kw)
        elif isinstance(mod, nn.Linear):
            macs += out[0].numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs, sum(p.numel() for p in model.parameters())


def resolve_weights(model: nn.Module, patterns: tuple[str, ...], where: str) -> list[tuple[str, nn.Conv2d]]:
    """Map Distiller weight names (``module.`` prefix optional) or regexes to convolutions."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    found: dict[str, nn.Conv2d] = {}
    for pattern in patterns:
        name = pattern.removeprefix("module.")
        module = name.removesuffix(".weight")
        if module in convs:
            found[module] = convs[module]
            continue
        try:
            regex = re.compile(name)
        except re.error:
            regex = None
        hits = [n for n in convs if regex is not None and (regex.fullmatch(n) or regex.fullmatch(f"{n}.weight"))]
        if not hits:
            raise ValueError(
                f"{where}: {pattern!r} matches no convolution weight of the model; "
                f"its convolutions are {', '.join(f'{n}.weight' for n in convs)}"
            )
        found.update((n, convs[n]) for n in hits)
    return list(found.items())


def _handler(group_type: str) -> tp.pruner.BasePruningFunc:
    return tp.prune_conv_out_channels if group_type == "Filters" else tp.prune_conv_in_channels


def _l1(conv: nn.Conv2d, group_type: str) -> torch.Tensor:
    w = conv.weight.detach().abs()  # (out, in/groups, kh, kw)
    return w.sum(dim=(1, 2, 3)) if group_type == "Filters" else w.sum(dim=(0, 2, 3))


def _group_key(group: tp.Group) -> frozenset[tuple[int, str]]:
    return frozenset((id(dep.target.module), dep.handler.__name__) for dep, _ in group)


def apply_pruners(model: nn.Module, pruners: list[PrunerSpec], example: torch.Tensor) -> PruneReport:
    """Prune ``model`` in place; raises ``ValueError`` for names or groups that cannot be pruned."""
    macs0, params0 = count_macs_params(model, example)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {id(m): n for n, m in model.named_modules()}
    plan: dict[frozenset[tuple[int, str]], tuple[PrunerSpec, list[nn.Conv2d]]] = {}
    for spec in pruners:
        for _, conv in resolve_weights(model, spec.weights, f"schedule.pruners.{spec.name}.weights"):
            size = conv.out_channels if spec.group_type == "Filters" else conv.in_channels
            key = _group_key(graph.get_pruning_group(conv, _handler(spec.group_type), idxs=list(range(size))))
            prev = plan.setdefault(key, (spec, []))
            if prev[0].sparsity != spec.sparsity or prev[0].group_type != spec.group_type:
                raise ValueError(
                    f"schedule.pruners: {names[id(conv)]} is coupled to a layer pruned by "
                    f"{prev[0].name!r} with a different sparsity or group_type than {spec.name!r}"
                )
            prev[1].append(conv)
    done = [_prune_group(graph, spec, convs, names) for spec, convs in plan.values()]
    macs1, params1 = count_macs_params(model, example)
    return PruneReport(tuple(done), macs0, macs1, params0, params1)


def _prune_group(
    graph: tp.DependencyGraph, spec: PrunerSpec, convs: list[nn.Conv2d], names: dict[int, str]
) -> GroupPruned:
    root = convs[0]
    norms = [_l1(c, spec.group_type) for c in convs]
    # Members indexed like the root (a residual add aligns channels one to one) add their norms.
    scores = torch.stack([n for n in norms if n.shape == norms[0].shape]).sum(dim=0)
    n = len(scores)
    n_prune = min(int(spec.sparsity * n), n - 1)  # Distiller rounds down; keep at least one channel
    members = tuple(names[id(c)] for c in convs)
    if n_prune > 0:
        idxs = torch.argsort(scores)[:n_prune].tolist()  # lowest L1 first
        group = graph.get_pruning_group(root, _handler(spec.group_type), idxs=idxs)
        if not graph.check_pruning_group(group):
            raise ValueError(
                f"schedule.pruners.{spec.name}: torch-pruning refuses to prune {members[0]} ({spec.group_type})"
            )
        group.prune()
    return GroupPruned(spec.name, members, spec.group_type, n, n - max(n_prune, 0))
