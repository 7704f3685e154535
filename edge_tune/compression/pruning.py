"""Pruning on torch-pruning: masks while a schedule runs, physical removal when it thins.

``Pruner`` executes one schedule pruner at a time on a model:

- **Filters / Channels** (convolutions; Filters of a hidden fully-connected
  layer too): each named layer is mapped to its torch-pruning dependency group
  (a residual add couples every convolution feeding it, so a stage's ``conv2``
  layers form one group). The group's channels are ranked by the L1 norm of
  the named weights summed over the group's named members (Distiller's
  ``group_dependency: Leader``) and the lowest are *masked*: every slice the
  group would remove (filters, batch-norm scale and shift, the consumers'
  input channels) is held at zero, so the masked network computes exactly
  what the thinned one will. ``thin()`` then removes them physically.
- **Rows** (fully-connected layers): input features by L1 norm, masked and
  never removed, as Distiller did (removing them would remove the producing
  stage's channels).
- **Elements** (``AutomatedGradualPruner``, ``LevelPruner``,
  ``SensitivityPruner``): fine-grained magnitude masks; they stay zeros in the
  exported model and change no shape.

Masks are re-applied after every optimizer step (``apply_masks``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edge_tune.compression.schedule import PrunerSpec
from edge_tune.models import device_of

__all__ = ["EXECUTORS", "GroupPruned", "PruneReport", "Pruner", "apply_pruners", "count_macs_params", "resolve_weights"]

Prunable = nn.Conv2d | nn.Linear


@dataclass(frozen=True)
class GroupPruned:
    pruner: str
    members: tuple[str, ...]  # the named layers in this dependency group
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
    zeros: int = 0  # parameters held at zero by element or row masks (they remain in the model)


@dataclass
class _Cut:
    """One dependency group's masked channels, waiting to be thinned."""

    spec: PrunerSpec
    root: nn.Module
    handler: object  # a torch-pruning pruning function
    size: int  # channels in the group
    idxs: list[int]
    members: tuple[str, ...]


def on_device_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``model``'s parameters."""
    return x.to(device_of(model))


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
            model.eval()(on_device_of(model, example[:1]))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs, sum(p.numel() for p in model.parameters())


def resolve_weights(
    model: nn.Module, patterns: tuple[str, ...], where: str, kinds: tuple[type, ...] = (nn.Conv2d,)
) -> list[tuple[str, nn.Module]]:
    """Map Distiller weight names (``module.`` prefix optional) or regexes to layers of ``kinds``."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Module) and isinstance(m, kinds)}
    found: dict[str, nn.Module] = {}
    for pattern in patterns:
        name = pattern.removeprefix("module.")
        module = name.removesuffix(".weight")
        if module in layers:
            found[module] = layers[module]
            continue
        try:
            regex = re.compile(name)
        except re.error:
            regex = None
        hits = [n for n in layers if regex is not None and (regex.fullmatch(n) or regex.fullmatch(f"{n}.weight"))]
        if not hits:
            kind = " or ".join(k.__name__ for k in kinds)
            raise ValueError(
                f"{where}: {pattern!r} matches no {kind} weight of the model; "
                f"those are {', '.join(f'{n}.weight' for n in layers)}"
            )
        found.update((n, layers[n]) for n in hits)
    return list(found.items())


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _handler(group_type: str, layer: nn.Module) -> object:
    if isinstance(layer, nn.Linear):
        return tp.prune_linear_out_channels
    if group_type == "Filters" or _depthwise(layer):  # a depthwise conv's channels are its filters
        return tp.prune_conv_out_channels
    return tp.prune_conv_in_channels


def _is_bn(m: object) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _weight(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach()


def _slices(module: nn.Module, handler_name: str, idxs: list[int]) -> list[tuple[str, Any]]:
    """The (parameter, index) slices that pruning ``idxs`` through ``handler_name`` removes from ``module``."""
    out_side = handler_name.endswith("out_channels") or _depthwise(module)
    rows = (idxs,)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if out_side:
            return [("weight", rows), ("bias", rows)]
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"grouped convolution with groups={module.groups} cannot be channel-pruned")
        return [("weight", (slice(None), idxs))]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return [("weight", rows), ("bias", rows)]
    return []


class Pruner:
    """Masks and thins one model as a schedule's pruners fire (see the module docstring)."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model, self.example = model, example  # example: (1, C, H, W)
        self._graph = tp.DependencyGraph().build_dependency(model, example_inputs=on_device_of(model, example))
        self._names = {id(m): n for n, m in model.named_modules()}
        self._cuts: dict[frozenset[tuple[int, str]], _Cut] = {}
        self._masks: dict[tuple[str, int, str], tuple[nn.Module, str, torch.Tensor]] = {}  # (source, layer, param)
        was_training = model.training
        with torch.no_grad():
            self._classes = int(model.eval()(on_device_of(model, example[:1])).shape[1])
        model.train(was_training)
        self.thinned: list[GroupPruned] = []
        self.activations: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # conv -> (APoZ %, mean) per filter
        self._fold = False

    # -- pruning -------------------------------------------------------------------------------
    def prune(self, spec: PrunerSpec, target: float, fold_batchnorm: bool = False) -> None:
        """Mask ``spec``'s weights to sparsity ``target`` (a fraction); masks only grow.

        With ``fold_batchnorm`` (Distiller's policy arg) a convolution's weights are ranked as the batch
        norm after it scales them: filter f by gamma_f / sqrt(running_var_f + eps).
        """
        self._fold = fold_batchnorm
        try:
            EXECUTORS[spec.executor](self, spec, target, f"schedule.pruners.{spec.name}")
        finally:
            self._fold = False
        self.apply_masks()

    def batchnorm_after(self, layer: nn.Module) -> nn.Module | None:
        """The batch norm that reads ``layer``'s output directly, if one does."""
        node = self._graph.module2node.get(layer)
        found = [o.module for o in (node.outputs if node is not None else []) if _is_bn(o.module)]
        return found[0] if len(found) == 1 else None

    def _ranked_weight(self, layer: nn.Module) -> torch.Tensor:
        """The weights as ranked: as they are, or scaled by the following batch norm when folding."""
        w = _weight(layer)
        bn = self.batchnorm_after(layer) if self._fold and isinstance(layer, nn.Conv2d) else None
        if bn is None:
            return w
        var = bn.running_var
        assert isinstance(var, torch.Tensor) and isinstance(bn.eps, float)
        gamma = _weight(bn) if getattr(bn, "affine", True) else torch.ones_like(var)
        return w * (gamma / torch.sqrt(var + bn.eps)).view(-1, *([1] * (w.dim() - 1)))

    def _score(self, name: str, layer: nn.Module, spec: PrunerSpec) -> torch.Tensor:
        """One score per channel of ``layer`` (its filters, or its input channels); the lowest are pruned."""
        stats = self.activations.get(name)
        if spec.needs_activations and stats is not None:
            apoz, mean = stats
            return -apoz if spec.ranking == "APoZ" else mean  # the most zeros, or the weakest mean, go first
        w = self._ranked_weight(layer).abs()  # conv (out, in/groups, kh, kw), linear (out, in)
        if spec.ranking == "L2":
            w = w.pow(2)
        dims = [d for d in range(w.dim()) if d != (1 if spec.group_type == "Channels" and not _depthwise(layer) else 0)]
        total = w.sum(dim=dims)
        return total.sqrt() if spec.ranking == "L2" else total

    @torch.no_grad()
    def record_activations(self, names: list[str], batches: Any) -> None:
        """Record, for each convolution in ``names``, the APoZ (percent of zeros) and the mean of each of its
        feature maps after its batch norm and a ReLU, over ``batches`` of training images (eval mode)."""
        layers = dict(self.model.named_modules())
        zeros: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}

        def hook(name: str, bn: nn.Module | None) -> Callable[[nn.Module, object, torch.Tensor], None]:
            def record(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
                act = torch.relu(bn(out) if bn is not None else out).float()  # (B, C, H, W)
                zeros[name] = zeros.get(name, 0) + (act == 0).float().mean(dim=(2, 3)).sum(dim=0)
                sums[name] = sums.get(name, 0) + act.mean(dim=(2, 3)).sum(dim=0)
                counts[name] = counts.get(name, 0) + act.shape[0]

            return record

        handles = [layers[n].register_forward_hook(hook(n, self.batchnorm_after(layers[n]))) for n in names]
        was_training = self.model.training
        try:
            self.model.eval()
            for x in batches:
                self.model(on_device_of(self.model, x))
        finally:
            self.model.train(was_training)
            for h in handles:
                h.remove()
        self.activations = {n: (100 * zeros[n] / counts[n], sums[n] / counts[n]) for n in counts}

    def _prune_rows(self, spec: PrunerSpec, target: float, where: str) -> None:
        for _, fc in resolve_weights(self.model, spec.weights, f"{where}.weights", (nn.Linear,)):
            weight = _weight(fc)  # (out, in)
            idxs = _lowest(weight.abs().sum(dim=0), target)  # input features: Distiller's rows of W^T
            mask = torch.ones_like(weight, dtype=torch.bool)
            mask[:, idxs] = False
            self.add_mask(spec.name, fc, "weight", mask)

    def _prune_elements(self, spec: PrunerSpec, target: float, where: str) -> None:
        for _, layer in resolve_weights(self.model, spec.weights, f"{where}.weights", (nn.Conv2d, nn.Linear)):
            self.add_mask(spec.name, layer, "weight", _magnitude_mask(self._ranked_weight(layer), target))

    def _prune_sensitivity(self, spec: PrunerSpec, target: float, where: str) -> None:
        kinds = (nn.Conv2d, nn.Linear)
        per_layer: dict[str, float] = {}
        for w, s in spec.sensitivities:
            if w != "*":
                per_layer.update((n, s) for n, _ in resolve_weights(self.model, (w,), f"{where}.sensitivities", kinds))
        default = dict(spec.sensitivities).get("*")
        for name, layer in self.model.named_modules():
            sensitivity = per_layer.get(name, default)
            if isinstance(layer, kinds) and sensitivity is not None:
                weight = _weight(layer)
                self.add_mask(spec.name, layer, "weight", weight.abs() > sensitivity * float(weight.std()))

    def _prune_groups(self, spec: PrunerSpec, target: float, where: str) -> None:
        kinds: tuple[type, ...] = (nn.Conv2d, nn.Linear) if spec.group_type == "Filters" else (nn.Conv2d,)
        plan: dict[frozenset[tuple[int, str]], list[nn.Module]] = {}
        for name, layer in resolve_weights(self.model, spec.weights, f"{where}.weights", kinds):
            self._refuse(spec, name, layer, where)
            handler = _handler(spec.group_type, layer)
            size = _weight(layer).shape[1 if handler is tp.prune_conv_in_channels else 0]
            group = self._graph.get_pruning_group(layer, handler, idxs=list(range(size)))
            key = frozenset((id(dep.target.module), dep.handler.__name__) for dep, _ in group)
            owner = self._cuts.get(key)
            if owner is not None and owner.spec.name != spec.name and owner.spec.sparsity != spec.sparsity:
                raise ValueError(
                    f"schedule.pruners: {name} is coupled to a layer pruned by {owner.spec.name!r} with a "
                    f"different sparsity than {spec.name!r}"
                )
            plan.setdefault(key, []).append(layer)
        for key, layers in plan.items():
            root, handler = layers[0], _handler(spec.group_type, layers[0])
            norms = [self._score(self._names[id(layer)], layer, spec) for layer in layers]
            # Members indexed like the root (a residual add aligns channels one to one) add their norms.
            scores = torch.stack([n for n in norms if n.shape == norms[0].shape]).sum(dim=0)
            idxs = _lowest(scores, target, spec.round_to)
            cut = _Cut(spec, root, handler, len(scores), idxs, tuple(self._names[id(m)] for m in layers))
            self._cuts[key] = cut
            self._mask_group(cut)

    def _refuse(self, spec: PrunerSpec, name: str, layer: nn.Module, where: str) -> None:
        if isinstance(layer, nn.Linear) and layer.out_features == self._classes and name == self._classifier():
            raise ValueError(f"{where}.weights: {name} is the classifier; its outputs are the classes")
        if spec.group_type == "Channels" and not _depthwise(layer) and self._reads_input(layer):
            raise ValueError(f"{where}.weights: {name} reads the model's input; its channels are the image's")

    def _reads_input(self, conv: nn.Module) -> bool:
        """Whether ``conv``'s input channels are the image's (nothing in the model produces them)."""
        group = self._graph.get_pruning_group(conv, tp.prune_conv_in_channels, idxs=[0])
        return all(dep.target.module is conv for dep, _ in group)

    def _classifier(self) -> str:
        return [n for n, m in self.model.named_modules() if isinstance(m, nn.Linear)][-1]

    def _mask_group(self, cut: _Cut) -> None:
        group = self._graph.get_pruning_group(cut.root, cut.handler, idxs=cut.idxs)
        for dep, idxs in group:
            module = dep.target.module
            for pname, index in _slices(module, dep.handler.__name__, list(idxs)):
                param = getattr(module, pname, None)
                if isinstance(param, torch.Tensor):
                    mask = torch.ones_like(param, dtype=torch.bool)
                    mask[index] = False
                    self.add_mask(f"{cut.spec.name}:{id(cut.root)}", module, pname, mask)

    def group_members(self, conv: nn.Module) -> tuple[str, ...]:
        """The layers whose filters go together with ``conv``'s (coupled by residual adds), in model order."""
        group = self._graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0])
        inside = {
            id(dep.target.module)
            for dep, _ in group
            if dep.handler.__name__.endswith("out_channels") and isinstance(dep.target.module, nn.Conv2d)
        }
        return tuple(n for n, m in self.model.named_modules() if id(m) in inside)

    # -- masks ---------------------------------------------------------------------------------
    def add_mask(self, source: str, module: nn.Module, pname: str, mask: torch.Tensor) -> None:
        key = (source, id(module), pname)
        old = self._masks.get(key)
        if old is not None and old[2].shape == mask.shape:
            mask = mask & old[2]  # masks only grow: what a pruner removed stays removed
        self._masks[key] = (module, pname, mask)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked slice; call after each optimizer step."""
        for module, pname, mask in self._masks.values():
            getattr(module, pname).mul_(mask)

    def zeros(self) -> int:
        """Parameters held at zero by masks that ``thin`` does not remove (elements, rows)."""
        return sum(int((~mask).sum()) for _, _, mask in self._masks.values())

    # -- thinning ------------------------------------------------------------------------------
    def thin(self, group_type: str | None = None) -> bool:
        """Physically remove the masked Filters/Channels (of ``group_type``, or all); True if any went."""
        cuts = {k: c for k, c in self._cuts.items() if group_type in (None, c.spec.group_type)}
        removed = False
        for key, cut in cuts.items():
            if cut.idxs:
                group = self._graph.get_pruning_group(cut.root, cut.handler, idxs=cut.idxs)
                if not self._graph.check_pruning_group(group):
                    raise ValueError(
                        f"schedule.pruners.{cut.spec.name}: torch-pruning refuses to prune {cut.members[0]} "
                        f"({cut.spec.group_type})"
                    )
                group.prune()
                removed = True
            self.thinned.append(
                GroupPruned(cut.spec.name, cut.members, cut.spec.group_type, cut.size, cut.size - len(cut.idxs))
            )
            del self._cuts[key]
            for mkey in [m for m in self._masks if m[0] == f"{cut.spec.name}:{id(cut.root)}"]:
                del self._masks[mkey]
        if removed:
            self._after_thinning()
        return removed

    def thin_zeros(self, group_type: str, source: str) -> bool:
        """Physically remove the Filters (or Channels) of convolutions whose weights are all zero, as
        Distiller's thinners do after a regularizer drove them there; True if any went.

        A structure goes only if it is zero in every convolution its dependency group couples on that
        side (the filters of every producer, or the input channels of every consumer), so that removing
        it removes zeros only. A batch norm's shift on a removed filter goes with it, as in Distiller.
        """
        done: set[int] = set()
        removed = False
        while True:
            found = self._zero_group(group_type, done)
            if found is None:
                break
            group, members, size, count = found
            group.prune()
            self.thinned.append(GroupPruned(source, members, group_type, size, size - count))
            removed = True
            self._after_thinning()
        return removed

    def _zero_group(self, group_type: str, done: set[int]) -> tuple[Any, tuple[str, ...], int, int] | None:
        """The next dependency group with structures that are zero throughout, ready to prune."""
        side = "out_channels" if group_type == "Filters" else "in_channels"
        for name, conv in self.model.named_modules():
            if not isinstance(conv, nn.Conv2d) or id(conv) in done or (_depthwise(conv) and side == "in_channels"):
                continue
            done.add(id(conv))
            if side == "in_channels" and self._reads_input(conv):
                continue
            handler = _handler(group_type, conv)
            size = _weight(conv).shape[0 if side == "out_channels" else 1]
            group = self._graph.get_pruning_group(conv, handler, idxs=list(range(size)))
            zero = torch.ones(size, dtype=torch.bool)
            members = []
            for dep, idxs in group:
                module = dep.target.module
                if isinstance(module, nn.Conv2d) and dep.handler.__name__.endswith(side) and len(idxs) == size:
                    w = _weight(module).abs()
                    per = w.sum(dim=(1, 2, 3)) if side == "out_channels" else w.sum(dim=(0, 2, 3))
                    zero &= (per[list(idxs)] == 0).cpu()
                    done.add(id(module))
                    members.append(self._names[id(module)])
            idxs = zero.nonzero().flatten().tolist()
            if idxs and len(idxs) < size:
                pruning = self._graph.get_pruning_group(conv, handler, idxs=idxs)
                if self._graph.check_pruning_group(pruning):
                    return pruning, tuple(members) or (name,), size, len(idxs)
        return None

    def _after_thinning(self) -> None:
        # Shapes changed: the graph is rebuilt, and an element mask on a thinned
        # layer is re-derived from its zeros (they are exactly the masked weights).
        example = on_device_of(self.model, self.example)  # the model may have moved to a GPU since
        self._graph = tp.DependencyGraph().build_dependency(self.model, example_inputs=example)
        for key, (module, pname, mask) in list(self._masks.items()):
            param = getattr(module, pname)
            if param.shape != mask.shape:
                self._masks[key] = (module, pname, param.detach() != 0)


# How each kind of pruner masks (``PrunerSpec.executor``: its group type, or Sensitivity). A new group type
# is a new entry here, not a new branch in ``Pruner.prune``.
EXECUTORS: dict[str, Callable[[Pruner, PrunerSpec, float, str], None]] = {
    "Filters": Pruner._prune_groups,
    "Channels": Pruner._prune_groups,
    "Rows": Pruner._prune_rows,
    "Elements": Pruner._prune_elements,
    "Sensitivity": Pruner._prune_sensitivity,
}


def _lowest(scores: torch.Tensor, target: float, round_to: int = 1) -> list[int]:
    """Indices of the floor(target x n) lowest scores (Distiller rounds down), keeping at least one
    channel; with ``round_to`` the kept count is rounded up to a multiple of it (or all of them)."""
    n = len(scores)
    keep = max(n - int(target * n), 1)
    keep = min(-(-keep // round_to) * round_to, n)
    k = n - keep
    return sorted(torch.argsort(scores, stable=True)[:k].tolist()) if k > 0 else []


def _magnitude_mask(w: torch.Tensor, target: float) -> torch.Tensor:
    """Keep all but the floor(target x numel) smallest |w|."""
    k = int(target * w.numel())
    mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    if k > 0:
        mask[torch.argsort(w.abs().flatten(), stable=True)[:k]] = False
    return mask.view_as(w)


def apply_pruners(model: nn.Module, pruners: list[PrunerSpec], example: torch.Tensor) -> PruneReport:
    """Prune ``model`` in place, each pruner at once to its (final) sparsity, then thin; one-shot."""
    macs0, params0 = count_macs_params(model, example)
    pruner = Pruner(model, example)
    for spec in pruners:
        pruner.prune(spec, spec.sparsity)
    pruner.thin()
    macs1, params1 = count_macs_params(model, example)
    return PruneReport(tuple(pruner.thinned), macs0, macs1, params0, params1, pruner.zeros())
