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

__all__ = [
    "PRUNERS",
    "LRSchedulerSpec",
    "Policy",
    "PrunerKind",
    "PrunerSpec",
    "QuantizerSpec",
    "Schedule",
    "agp_target",
    "check_schedule_fits",
    "parse_schedule",
]


@dataclass(frozen=True)
class PrunerKind:
    """What a Distiller pruner class takes and does."""

    group_types: tuple[str, ...]  # allowed group_type values; () = element-wise, no group_type key
    required: tuple[str, ...]  # keys besides class
    optional: tuple[str, ...] = ()
    gradual: bool = False  # AGP: sparsity rises from initial to final over the policy's epochs


PRUNERS: dict[str, PrunerKind] = {
    # Structured (Filters/Channels of convolutions, Rows of fully-connected layers), ranked by L1 norm.
    "L1RankedStructureParameterPruner": PrunerKind(
        ("Filters", "Channels", "Rows"), ("group_type", "desired_sparsity", "weights"), ("group_dependency", "round_to")
    ),
    "L1RankedStructureParameterPruner_AGP": PrunerKind(
        ("Filters", "Channels", "Rows"),
        ("group_type", "initial_sparsity", "final_sparsity", "weights"),
        ("group_dependency", "round_to"),
        gradual=True,
    ),
    # Fine-grained (element-wise) by magnitude.
    "AutomatedGradualPruner": PrunerKind((), ("initial_sparsity", "final_sparsity", "weights"), gradual=True),
    "LevelPruner": PrunerKind((), ("desired_sparsity", "weights")),
    "SensitivityPruner": PrunerKind((), ("sensitivities",)),  # |w| below sensitivity x std(w) is pruned
}
THINNERS = {"FilterRemover": "Filters", "ChannelRemover": "Channels"}
_POLICY_KINDS = ("pruner", "extension", "lr_scheduler")


@dataclass(frozen=True)
class PrunerSpec:
    name: str
    cls: str  # Distiller class name, a key of PRUNERS
    group_type: str  # Filters | Channels | Rows, or Elements for the fine-grained pruners
    sparsity: float  # desired_sparsity, or final_sparsity of an AGP pruner: fraction removed, in [0, 1)
    weights: tuple[str, ...]  # parameter names (``module.`` prefix optional) or regular expressions
    initial_sparsity: float = 0.0  # AGP's first step
    sensitivities: tuple[tuple[str, float], ...] = ()  # SensitivityPruner: (weight name or "*", multiple of std)
    round_to: int = 1  # edge_tune's key: channels kept are a multiple of this (the device's SIMD width)

    @property
    def structured(self) -> bool:
        return self.group_type in ("Filters", "Channels", "Rows")

    @property
    def gradual(self) -> bool:
        return PRUNERS[self.cls].gradual

    @property
    def executor(self) -> str:
        """The key of ``pruning.EXECUTORS`` that masks for it: its group type, or Sensitivity."""
        return "Sensitivity" if self.sensitivities else self.group_type


def agp_target(spec: PrunerSpec, policy: Policy, epoch: int) -> float:
    """Sparsity an AGP pruner aims at when its policy fires at ``epoch`` (Zhu & Gupta's cubic schedule).

    It starts at ``initial_sparsity`` and reaches ``final_sparsity`` exactly
    at the policy's last pruning epoch, rising fastest at first:
    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / span) ** 3.
    """
    if not spec.gradual:
        return spec.sparsity
    start, freq = policy.starting_epoch, policy.frequency
    if policy.epochs is not None:
        start, last = min(policy.epochs), max(policy.epochs)
        span = last - start
    else:
        span = ((policy.ending_epoch - start - 1) // freq) * freq
    if span <= 0:
        return spec.sparsity
    progress = min(max((epoch - start) / span, 0.0), 1.0)
    return spec.sparsity + (spec.initial_sparsity - spec.sparsity) * (1 - progress) ** 3


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


@dataclass(frozen=True)
class QuantizerSpec:
    """Distiller's ``PostTrainLinearQuantizer``, executed by NNCF on the OpenVINO model."""

    name: str
    symmetric: bool = True  # mode SYMMETRIC; ASYMMETRIC_* quantize activations asymmetrically
    per_channel_wts: bool = True  # one scale per output channel of each weight
    calibration_images: int = 300  # training images NNCF collects statistics on (edge_tune's key)


_QUANT_MODES = {"SYMMETRIC": True, "ASYMMETRIC_UNSIGNED": False, "ASYMMETRIC_SIGNED": False}


def _parse_quantizers(d: Any) -> QuantizerSpec | None:
    if not d:
        return None
    if not isinstance(d, dict) or len(d) != 1:
        raise ValueError("schedule.quantizers: must hold exactly one quantizer")
    (name, q), where = next(iter(d.items())), f"schedule.quantizers.{next(iter(d))}"
    if not isinstance(q, dict) or q.get("class") != "PostTrainLinearQuantizer":
        cls = q.get("class") if isinstance(q, dict) else None
        raise ValueError(f"{where}.class: unsupported quantizer {cls!r}; supported: PostTrainLinearQuantizer (INT8)")
    allowed = {"class", "bits_activations", "bits_parameters", "bits_accum", "mode", "per_channel_wts"}
    _check_keys(q, allowed | {"calibration_images"}, where)
    for key, bits in (("bits_activations", 8), ("bits_parameters", 8), ("bits_accum", 32)):
        if q.get(key, bits) != bits:
            raise ValueError(f"{where}.{key}: only {bits} is supported (the device's INT8), got {q[key]!r}")
    mode = q.get("mode", "SYMMETRIC")
    if mode not in _QUANT_MODES:
        raise ValueError(f"{where}.mode: {mode!r} is not one of {', '.join(_QUANT_MODES)}")
    images = q.get("calibration_images", 300)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"{where}.calibration_images: must be a whole number >= 1, got {images!r}")
    return QuantizerSpec(name, _QUANT_MODES[mode], bool(q.get("per_channel_wts", True)), images)


@dataclass
class Schedule:
    pruners: dict[str, PrunerSpec] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)  # instance -> class
    lr_schedulers: dict[str, LRSchedulerSpec] = field(default_factory=dict)
    policies: list[Policy] = field(default_factory=list)
    quantizer: QuantizerSpec | None = None  # post-training INT8, after fine-tuning
    raw: dict[str, Any] = field(default_factory=dict)  # the concrete document, for best.json

    def pruners_at(self, epoch: int) -> list[tuple[PrunerSpec, Policy]]:
        """Pruners whose policies fire at ``epoch``, in declaration order."""
        return [(self.pruners[p.instance], p) for p in self.policies if p.kind == "pruner" and p.fires(epoch)]

    def events_at(self, epoch: int) -> list[Policy]:
        """Pruner and extension policies firing at ``epoch``, in declaration order (Distiller's rule)."""
        return [p for p in self.policies if p.kind in ("pruner", "extension") and p.fires(epoch)]

    def policy_of(self, pruner: str) -> Policy:
        return next(p for p in self.policies if p.kind == "pruner" and p.instance == pruner)

    def structured_final(self) -> list[PrunerSpec]:
        """The structured pruners at their final sparsity: what decides the final architecture."""
        return [spec for spec in self.pruners.values() if spec.group_type in ("Filters", "Channels")]

    def last_epoch(self) -> int:
        """The last epoch at which any pruner fires (for a schedule that must end within fine-tuning)."""
        last = 0
        for p in self.policies:
            if p.kind == "pruner":
                last = max(last, _fires_last(p))
        return last


def check_schedule_fits(schedule: Schedule, epochs: int) -> None:
    """A pruner that would fire after fine-tuning ends is an error, not a silently skipped step."""
    last = schedule.last_epoch()
    if last >= epochs:
        late = next(p.instance for p in schedule.policies if p.kind == "pruner" and _fires_last(p) >= epochs)
        raise ValueError(
            f"schedule.policies: pruner {late!r} fires until epoch {last}, but fine-tuning has {epochs} epochs "
            f"(0 to {epochs - 1}); raise finetune.epochs (--epochs) or end the policy earlier"
        )


def _fires_last(p: Policy) -> int:
    return max(p.epochs) if p.epochs is not None else _last_firing(p)


def _last_firing(p: Policy) -> int:
    if p.ending_epoch >= 1 << 30:
        return p.starting_epoch  # open-ended: at least its start
    return p.starting_epoch + ((p.ending_epoch - p.starting_epoch - 1) // p.frequency) * p.frequency


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}.{key}: required")
    return d[key]


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ValueError(f"{where}.{extra[0]}: unsupported key; supported: {', '.join(sorted(allowed))}")


def _fraction(d: dict[str, Any], key: str, where: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"{where}.{key}: must be a number in [0, 1), got {v!r}")
    return float(v)


def _parse_pruner(name: str, d: Any) -> PrunerSpec:
    where = f"schedule.pruners.{name}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    cls = _need(d, "class", where)
    kind = PRUNERS.get(cls)
    if kind is None:
        raise ValueError(f"{where}.class: unsupported pruner {cls!r}; supported: {', '.join(PRUNERS)}")
    _check_keys(d, {"class", *kind.required, *kind.optional}, where)
    for key in kind.required:
        _need(d, key, where)
    group_type = d.get("group_type", "Elements")
    if kind.group_types and group_type not in kind.group_types:
        raise ValueError(f"{where}.group_type: {group_type!r} is not one of {', '.join(kind.group_types)}")
    if d.get("group_dependency", "Leader") != "Leader":
        raise ValueError(f"{where}.group_dependency: only 'Leader' is supported, got {d['group_dependency']!r}")
    if "sensitivities" in d:
        sens = d["sensitivities"]
        if not isinstance(sens, dict) or not sens:
            raise ValueError(f"{where}.sensitivities: must map weight names (or '*') to numbers")
        for w, v in sens.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{where}.sensitivities.{w}: must be a number >= 0, got {v!r}")
        named = tuple(w for w in sens if w != "*")
        return PrunerSpec(
            name, cls, group_type, 0.0, named, sensitivities=tuple((w, float(v)) for w, v in sens.items())
        )
    weights = d["weights"]
    if not isinstance(weights, list) or not weights or not all(isinstance(w, str) for w in weights):
        raise ValueError(f"{where}.weights: must be a non-empty list of parameter names")
    round_to = d.get("round_to", 1)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"{where}.round_to: must be a whole number >= 1, got {round_to!r}")
    if kind.gradual:
        initial, final = _fraction(d, "initial_sparsity", where), _fraction(d, "final_sparsity", where)
        if initial > final:
            raise ValueError(f"{where}.initial_sparsity: {initial} is above final_sparsity {final}")
        return PrunerSpec(name, cls, group_type, final, tuple(weights), initial, round_to=round_to)
    return PrunerSpec(name, cls, group_type, _fraction(d, "desired_sparsity", where), tuple(weights), round_to=round_to)


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
    _check_keys(doc, {"version", "pruners", "extensions", "lr_schedulers", "quantizers", "policies"}, "schedule")
    if doc.get("version", 1) != 1:  # Distiller never reads it, and five of its sixteen CIFAR recipes lack it
        raise ValueError(f"schedule.version: 1 (Distiller's format) or absent, got {doc.get('version')!r}")
    sched = Schedule(raw=doc)
    sched.pruners = {n: _parse_pruner(n, d) for n, d in (doc.get("pruners") or {}).items()}
    for name, d in (doc.get("extensions") or {}).items():
        cls = d.get("class") if isinstance(d, dict) else None
        if cls not in THINNERS:
            raise ValueError(f"schedule.extensions.{name}.class: unsupported {cls!r}; supported: {', '.join(THINNERS)}")
        _check_keys(d, {"class", "thinning_func_str", "arch", "dataset"}, f"schedule.extensions.{name}")
        if d.get("thinning_func_str", "remove_filters" if cls == "FilterRemover" else "remove_channels") != (
            "remove_filters" if cls == "FilterRemover" else "remove_channels"
        ):
            raise ValueError(f"schedule.extensions.{name}.thinning_func_str: does not match class {cls}")
        sched.extensions[name] = cls
    for name, d in (doc.get("lr_schedulers") or {}).items():
        sched.lr_schedulers[name] = _parse_lr_scheduler(name, d)
    sched.quantizer = _parse_quantizers(doc.get("quantizers"))
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
    kwargs = {k: v for k, v in d.items() if k != "class"}
    import inspect

    accepted = set(inspect.signature(getattr(lrs, cls)).parameters) - {"optimizer", "self"}
    _check_keys(kwargs, accepted, where)  # torch would only complain in the middle of a trial
    return LRSchedulerSpec(name, cls, kwargs)
