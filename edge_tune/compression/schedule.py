"""Distiller's compression schedule (``version: 1``), parsed and validated.

The language is Distiller's: ``pruners``, ``extensions``, ``lr_schedulers``
and ``policies`` that say at which epochs each instance acts. Parsing only
checks and types the document; ``compression.pruning`` executes pruners on
torch-pruning. Anything not understood raises ``ValueError`` naming the key,
so nothing in a schedule is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LRSchedulerSpec", "Policy", "PrunerSpec", "Schedule", "parse_schedule"]

STRUCTURE_PRUNERS = {"L1RankedStructureParameterPruner"}
GROUP_TYPES = {"Filters", "Channels"}
THINNERS = {"FilterRemover": "Filters", "ChannelRemover": "Channels"}
_POLICY_KINDS = ("pruner", "extension", "lr_scheduler")


@dataclass(frozen=True)
class PrunerSpec:
    name: str
    cls: str  # Distiller class name
    group_type: str  # Filters | Channels
    sparsity: float  # fraction of the group removed, in [0, 1)
    weights: tuple[str, ...]  # parameter names or regular expressions


@dataclass(frozen=True)
class LRSchedulerSpec:
    name: str
    cls: str  # a torch.optim.lr_scheduler class name
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Policy:
    kind: str  # pruner | extension | lr_scheduler
    instance: str
    epochs: tuple[int, ...] | None = None  # explicit list, or None for the range below
    starting_epoch: int = 0
    ending_epoch: int = 1 << 30  # exclusive, as in Distiller
    frequency: int = 1

    def fires(self, epoch: int) -> bool:
        if self.epochs is not None:
            return epoch in self.epochs
        in_range = self.starting_epoch <= epoch < self.ending_epoch
        return in_range and (epoch - self.starting_epoch) % self.frequency == 0


@dataclass
class Schedule:
    pruners: dict[str, PrunerSpec] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)  # instance -> class
    lr_schedulers: dict[str, LRSchedulerSpec] = field(default_factory=dict)
    policies: list[Policy] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the concrete document, for best.json

    def pruners_at(self, epoch: int) -> list[PrunerSpec]:
        return [self.pruners[p.instance] for p in self.policies if p.kind == "pruner" and p.fires(epoch)]

    def one_shot_pruners(self) -> list[PrunerSpec]:
        """Pruners that act once, before fine-tuning; the only timing run so far."""
        late = [p for p in self.policies if p.kind == "pruner" and not _only_epoch_zero(p)]
        if late:
            raise ValueError(
                f"policies: pruner {late[0].instance!r} acts after epoch 0; "
                "this version prunes once before fine-tuning (use epochs: [0])"
            )
        return self.pruners_at(0)


def _only_epoch_zero(p: Policy) -> bool:
    if p.epochs is not None:
        return set(p.epochs) == {0}
    return p.starting_epoch == 0 and p.ending_epoch <= p.frequency


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}.{key}: required")
    return d[key]


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ValueError(f"{where}.{extra[0]}: unsupported key; supported: {', '.join(sorted(allowed))}")


def _parse_pruner(name: str, d: Any) -> PrunerSpec:
    where = f"schedule.pruners.{name}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    cls = _need(d, "class", where)
    if cls not in STRUCTURE_PRUNERS:
        raise ValueError(
            f"{where}.class: unsupported pruner {cls!r}; supported: {', '.join(sorted(STRUCTURE_PRUNERS))}"
        )
    _check_keys(d, {"class", "group_type", "desired_sparsity", "weights", "group_dependency"}, where)
    group_type = _need(d, "group_type", where)
    if group_type not in GROUP_TYPES:
        raise ValueError(f"{where}.group_type: {group_type!r} is not one of {', '.join(sorted(GROUP_TYPES))}")
    sparsity = _need(d, "desired_sparsity", where)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"{where}.desired_sparsity: must be a number in [0, 1), got {sparsity!r}")
    weights = _need(d, "weights", where)
    if not isinstance(weights, list) or not weights or not all(isinstance(w, str) for w in weights):
        raise ValueError(f"{where}.weights: must be a non-empty list of parameter names")
    return PrunerSpec(name, cls, group_type, float(sparsity), tuple(weights))


def _parse_policy(i: int, d: Any, sched: Schedule) -> Policy:
    where = f"schedule.policies[{i}]"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    kinds = [k for k in _POLICY_KINDS if k in d]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of {', '.join(_POLICY_KINDS)}")
    kind = kinds[0]
    _check_keys(d, {kind, "epochs", "starting_epoch", "ending_epoch", "frequency"}, where)
    ref = d[kind]
    instance = ref.get("instance_name") if isinstance(ref, dict) else None
    registries: dict[str, dict[str, Any]] = {
        "pruner": sched.pruners,
        "extension": sched.extensions,
        "lr_scheduler": sched.lr_schedulers,
    }
    known = registries[kind]
    if not isinstance(instance, str) or instance not in known:
        raise ValueError(
            f"{where}.{kind}.instance_name: {instance!r} is not a defined {kind}; defined: {', '.join(known) or 'none'}"
        )
    if "epochs" in d:
        epochs = d["epochs"]
        if not isinstance(epochs, list) or not all(isinstance(e, int) and e >= 0 for e in epochs):
            raise ValueError(f"{where}.epochs: must be a list of epoch numbers")
        return Policy(kind, instance, epochs=tuple(epochs))
    for key in ("starting_epoch", "ending_epoch", "frequency"):
        if key in d and (not isinstance(d[key], int) or d[key] < 0):
            raise ValueError(f"{where}.{key}: must be a whole number >= 0")
    return Policy(
        kind, instance, None, d.get("starting_epoch", 0), d.get("ending_epoch", 1 << 30), max(1, d.get("frequency", 1))
    )


def parse_schedule(doc: Any) -> Schedule:
    """Validate a concrete schedule (no ``${...}`` left) and return it typed."""
    if not isinstance(doc, dict):
        raise ValueError("schedule: must be a mapping")
    _check_keys(doc, {"version", "pruners", "extensions", "lr_schedulers", "policies"}, "schedule")
    if doc.get("version") != 1:
        raise ValueError(f"schedule.version: must be 1 (Distiller's format), got {doc.get('version')!r}")
    sched = Schedule(raw=doc)
    sched.pruners = {n: _parse_pruner(n, d) for n, d in (doc.get("pruners") or {}).items()}
    for name, d in (doc.get("extensions") or {}).items():
        cls = d.get("class") if isinstance(d, dict) else None
        if cls not in THINNERS:
            raise ValueError(f"schedule.extensions.{name}.class: unsupported {cls!r}; supported: {', '.join(THINNERS)}")
        _check_keys(d, {"class", "thinning_func_str", "arch", "dataset"}, f"schedule.extensions.{name}")
        sched.extensions[name] = cls
    for name, d in (doc.get("lr_schedulers") or {}).items():
        sched.lr_schedulers[name] = _parse_lr_scheduler(name, d)
    sched.policies = [_parse_policy(i, d, sched) for i, d in enumerate(doc.get("policies") or [])]
    used = {(p.kind, p.instance) for p in sched.policies}
    for kind, names in (("pruner", sched.pruners), ("lr_scheduler", sched.lr_schedulers)):
        for n in names:
            if (kind, n) not in used:
                raise ValueError(f"schedule.{kind}s.{n}: defined but no policy uses it")
    return sched


def _parse_lr_scheduler(name: str, d: Any) -> LRSchedulerSpec:
    import torch.optim.lr_scheduler as lrs

    where = f"schedule.lr_schedulers.{name}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    cls = _need(d, "class", where)
    if not isinstance(getattr(lrs, str(cls), None), type):
        raise ValueError(
            f"{where}.class: {cls!r} is not a torch.optim.lr_scheduler class "
            "(e.g. StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR)"
        )
    return LRSchedulerSpec(name, cls, {k: v for k, v in d.items() if k != "class"})
