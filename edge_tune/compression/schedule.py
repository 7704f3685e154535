"""Distiller's compression schedule, parsed and validated.

The language is Distiller's: ``pruners``, ``regularizers``, ``extensions``
(thinners), ``lr_schedulers``, ``quantizers`` and ``policies`` that say at
which epochs each instance acts, with the policy ``args`` Distiller reads.
Parsing only checks and types the document; ``compression.pruning`` and
``compression.executor`` execute it. Every key Distiller reads is either
executed or refused by name (``REFUSED``, ``POLICY_ARGS``); anything else
raises ``ValueError`` naming the key, so nothing in a schedule is silently
ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "POLICY_ARGS",
    "PRUNERS",
    "REFUSED",
    "REGULARIZERS",
    "THINNERS",
    "LRSchedulerSpec",
    "Policy",
    "PrunerKind",
    "PrunerSpec",
    "QuantizerSpec",
    "RegularizerSpec",
    "Schedule",
    "ThinnerSpec",
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
    ranking: str = "L1"  # what structures are ranked by: L1 or L2 of the weights, APoZ or Mean of the activations


_RANKED = ("group_type", "desired_sparsity", "weights")
_RANKED_AGP = ("group_type", "initial_sparsity", "final_sparsity", "weights")
_GROUPING = ("group_dependency", "round_to")


def _ranked(ranking: str, group_types: tuple[str, ...] = ("Filters", "Channels", "Rows")) -> dict[str, PrunerKind]:
    """A ranked structure pruner in its one-shot and AGP forms."""
    return {
        "": PrunerKind(group_types, _RANKED, _GROUPING, ranking=ranking),
        "_AGP": PrunerKind(group_types, _RANKED_AGP, _GROUPING, gradual=True, ranking=ranking),
    }


PRUNERS: dict[str, PrunerKind] = {
    # Structured (Filters/Channels of convolutions, Rows of fully-connected layers), ranked by the weights' norm.
    **{f"L1RankedStructureParameterPruner{s}": k for s, k in _ranked("L1").items()},
    **{f"L2RankedStructureParameterPruner{s}": k for s, k in _ranked("L2").items()},
    # Filters ranked by their feature maps after the ReLU, recorded on training batches (network trimming).
    **{f"ActivationAPoZRankedFilterPruner{s}": k for s, k in _ranked("APoZ", ("Filters",)).items()},
    **{f"ActivationMeanRankedFilterPruner{s}": k for s, k in _ranked("Mean", ("Filters",)).items()},
    # Fine-grained (element-wise) by magnitude.
    "AutomatedGradualPruner": PrunerKind((), ("initial_sparsity", "final_sparsity", "weights"), gradual=True),
    "LevelPruner": PrunerKind((), ("desired_sparsity", "weights")),
    "SensitivityPruner": PrunerKind((), ("sensitivities",)),  # |w| below sensitivity x std(w) is pruned
}
_RANDOM = "it prunes at random, a baseline for papers; its result is a draw, not a choice a search can learn from"
REFUSED: dict[str, str] = {  # Distiller classes that are refused, and why
    "RandomLevelStructureParameterPruner": _RANDOM,
    "RandomRankedFilterPruner": _RANDOM,
    "RandomRankedFilterPruner_AGP": _RANDOM,
    "BernoulliFilterPruner": "it drops random filters in each forward pass (a regulariser); nothing is removed",
    "BernoulliFilterPruner_AGP": "it drops random filters in each forward pass (a regulariser); nothing is removed",
    "SplicingPruner": "dynamic network surgery splices pruned weights back; its element-wise masks change no "
    "shape, so no latency: use AutomatedGradualPruner or SensitivityPruner for fine-grained sparsity",
    "GradientRankedFilterPruner": "it ranks filters by gradients that edge_tune does not record",
    "GradientRankedFilterPruner_AGP": "it ranks filters by gradients that edge_tune does not record",
    "FMReconstructionChannelPruner": "it needs feature-map reconstruction (least squares) that edge_tune does not do",
    "StructureParameterPruner": "an abstract base class of Distiller, not a pruner",
}
# Each thinner class and the thinning_func_str it implies (StructureRemover: the one it is given).
THINNERS: dict[str, str | None] = {
    "FilterRemover": "remove_filters",
    "ChannelRemover": "remove_channels",
    "StructureRemover": None,
}
THINNING_FUNCS = {"remove_filters": "Filters", "remove_channels": "Channels"}
REGULARIZERS = ("GroupLassoRegularizer", "L1Regularizer")
_POLICY_KINDS = ("pruner", "regularizer", "extension", "lr_scheduler")

# Policy ``args`` Distiller's PruningPolicy reads: executed, accepted because edge_tune already does what they
# ask, or refused (a message, or None: only the value in ``_ARG_DEFAULTS`` is accepted).
POLICY_ARGS: dict[str, dict[str, str | None]] = {
    "pruner": {
        "fold_batchnorm": "executed: ranks convolution weights scaled by their batch norm (gamma / sigma)",
        "keep_mask": "accepted: masks are always kept to the end and the masked structures removed",
        "mask_on_forward_only": "accepted: masks are applied after every step, which masks every forward pass",
        "mask_gradients": "accepted: masked weights are zero after every step whatever their gradient",
        "mini_batch_pruning_frequency": None,
        "use_double_copies": None,
        "discard_masks_at_minibatch_end": None,
        "skip_first_minibatch": None,
        "levels": None,
    },
    "regularizer": {"keep_mask": "executed: the threshold mask at the policy's end is kept, and thinned"},
}
_ARG_DEFAULTS: dict[str, Any] = {
    "mini_batch_pruning_frequency": 0,
    "use_double_copies": False,
    "discard_masks_at_minibatch_end": False,
    "skip_first_minibatch": False,
    "levels": None,
}
_ARG_REFUSED = {
    "mini_batch_pruning_frequency": "edge_tune prunes at epoch starts only",
    "use_double_copies": "training unmasked copies of masked weights is not supported",
    "discard_masks_at_minibatch_end": "masks are kept for the whole policy",
    "skip_first_minibatch": "a pruner acts at the start of its epoch",
    "levels": "give each pruner its own sparsity instead",
}


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
    def ranking(self) -> str:
        """L1 or L2 (of the weights), APoZ or Mean (of the activations); element-wise pruners: L1."""
        return PRUNERS[self.cls].ranking

    @property
    def needs_activations(self) -> bool:
        return self.ranking in ("APoZ", "Mean")

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
    index: int = 0  # its place in ``policies``, for messages
    fold_batchnorm: bool = False  # pruner arg: rank BN-folded weights
    keep_mask: bool = False  # regularizer arg: the threshold mask at the policy's end stays

    @property
    def where(self) -> str:
        return f"schedule.policies[{self.index}]"

    def fires(self, epoch: int) -> bool:
        if self.epochs is not None:
            return epoch in self.epochs
        in_range = self.starting_epoch <= epoch < self.ending_epoch
        return in_range and (epoch - self.starting_epoch) % self.frequency == 0

    def last(self) -> int:
        """The last epoch at which it fires (its start, for a policy without an end)."""
        if self.epochs is not None:
            return max(self.epochs, default=0)
        if self.ending_epoch >= 1 << 30:
            return self.starting_epoch
        return self.starting_epoch + ((self.ending_epoch - self.starting_epoch - 1) // self.frequency) * self.frequency

    @property
    def bounded(self) -> bool:
        """Whether it has a last epoch (an ``epochs`` list, or an ``ending_epoch``)."""
        return self.epochs is not None or self.ending_epoch < 1 << 30


@dataclass(frozen=True)
class RegularizerSpec:
    """Distiller's ``GroupLassoRegularizer`` (Filters, Channels) or ``L1Regularizer`` (elements)."""

    name: str
    cls: str
    regims: tuple[tuple[str, float, str], ...]  # (weight name, strength, Filters | Channels | Elements)
    threshold_criteria: str | None = None  # Mean_Abs | Max: after each step, groups whose norm <= strength go to 0


@dataclass(frozen=True)
class ThinnerSpec:
    """A thinning extension: ``net_thinner`` removes the Filters or Channels that are zero or masked."""

    name: str
    cls: str
    group_type: str  # Filters | Channels
    arch: str = ""  # what Distiller thinned for (checked against the model: a warning names both)
    dataset: str = ""


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
    regularizers: dict[str, RegularizerSpec] = field(default_factory=dict)
    extensions: dict[str, ThinnerSpec] = field(default_factory=dict)
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

    def regularizers_at(self, epoch: int) -> list[tuple[RegularizerSpec, Policy]]:
        return [(self.regularizers[p.instance], p) for p in self.policies if p.kind == "regularizer" and p.fires(epoch)]

    def policy_of(self, pruner: str) -> Policy:
        return next(p for p in self.policies if p.kind == "pruner" and p.instance == pruner)

    def structured_final(self) -> list[PrunerSpec]:
        """The structured pruners at their final sparsity: what decides the final architecture."""
        return [spec for spec in self.pruners.values() if spec.group_type in ("Filters", "Channels")]

    @property
    def planned(self) -> bool:
        """Whether the final architecture is known before training: not when a regularizer drives
        structures to zero for a thinner to remove, which only training decides."""
        return not self.regularizers

    def last_epoch(self) -> int:
        """The last epoch at which a pruner, regularizer or thinner acts: the schedule needs one more."""
        return max((p.last() for p in self.policies if p.kind != "lr_scheduler"), default=0)


def check_schedule_fits(schedule: Schedule, epochs: int, truncate_lr: bool = False) -> None:
    """A policy that would act after fine-tuning ends is an error, not a silently skipped step; an lr
    scheduler's policy may be cut short at the last epoch when ``truncate_lr`` (``--truncate-lr``) says so."""
    for p in schedule.policies:
        if p.last() < epochs or (p.kind == "lr_scheduler" and truncate_lr):  # open-ended: last() is its start
            continue
        how = f"raise --epochs (finetune.epochs) to {p.last() + 1} or end the policy earlier"
        if p.kind == "lr_scheduler":
            how += ", or pass --truncate-lr to stop stepping it when fine-tuning ends"
        raise ValueError(
            f"{p.where}: {p.kind.replace('_', ' ')} {p.instance!r} acts until epoch {p.last()}, but fine-tuning "
            f"has {epochs} epoch(s) (0 to {epochs - 1}); {how}"
        )


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


def _strength(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"{where}: a regularization strength must be a number >= 0, got {v!r}")
    return float(v)


def _parse_pruner(name: str, d: Any) -> PrunerSpec:
    where = f"schedule.pruners.{name}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    cls = _need(d, "class", where)
    if cls in REFUSED:
        raise ValueError(f"{where}.class: {cls} is not supported: {REFUSED[cls]}")
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


_GROUP_LASSO_TYPES = {"Filters": "Filters", "3D": "Filters", "Channels": "Channels"}
_GROUP_LASSO_REFUSED = {
    "2D": "kernel-wise groups",
    "Rows": "row-wise groups",
    "Cols": "column-wise groups",
    "Rows+Cols": "row- and column-wise groups",
    "Cols+Rows": "row- and column-wise groups",
    "4D": "whole layers",
    "Channels+4D": "whole layers",
    "4D+Channels": "whole layers",
}


def _parse_regularizer(name: str, d: Any) -> RegularizerSpec:
    where = f"schedule.regularizers.{name}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    cls = _need(d, "class", where)
    if cls not in REGULARIZERS:
        raise ValueError(f"{where}.class: unsupported regularizer {cls!r}; supported: {', '.join(REGULARIZERS)}")
    _check_keys(d, {"class", "reg_regims", "threshold_criteria"}, where)
    regims = _need(d, "reg_regims", where)
    if not isinstance(regims, dict) or not regims:
        raise ValueError(f"{where}.reg_regims: must map weight names to strengths")
    criteria = d.get("threshold_criteria")
    if criteria not in (None, "Mean_Abs", "Max"):
        raise ValueError(f"{where}.threshold_criteria: {criteria!r} is not one of Mean_Abs, Max (or absent)")
    out: list[tuple[str, float, str]] = []
    for weight, regim in regims.items():
        at = f"{where}.reg_regims.{weight}"
        if cls == "L1Regularizer":
            out.append((str(weight), _strength(regim, at), "Elements"))
            continue
        if not isinstance(regim, list) or len(regim) != 2:
            raise ValueError(f"{at}: GroupLassoRegularizer takes [strength, group type], got {regim!r}")
        group = str(regim[1])
        if group in _GROUP_LASSO_REFUSED:
            raise ValueError(
                f"{at}: group type {group} ({_GROUP_LASSO_REFUSED[group]}) is not supported: edge_tune thins "
                "Filters and Channels, and zeroing other groups changes no shape"
            )
        if group not in _GROUP_LASSO_TYPES:
            raise ValueError(f"{at}: group type {group!r} is not one of {', '.join(_GROUP_LASSO_TYPES)}")
        out.append((str(weight), _strength(regim[0], at), _GROUP_LASSO_TYPES[group]))
    return RegularizerSpec(name, cls, tuple(out), criteria)


def _parse_thinner(name: str, d: Any) -> ThinnerSpec:
    where = f"schedule.extensions.{name}"
    cls = d.get("class") if isinstance(d, dict) else None
    if cls not in THINNERS:
        raise ValueError(f"{where}.class: unsupported {cls!r}; supported: {', '.join(THINNERS)}")
    _check_keys(d, {"class", "thinning_func_str", "arch", "dataset"}, where)
    implied = THINNERS[cls]
    func = d.get("thinning_func_str", implied)
    if implied is not None and func != implied:
        raise ValueError(f"{where}.thinning_func_str: {func!r} does not match class {cls} ({implied})")
    if func not in THINNING_FUNCS:
        raise ValueError(f"{where}.thinning_func_str: {func!r} is not one of {', '.join(THINNING_FUNCS)}")
    group = THINNING_FUNCS[func]
    return ThinnerSpec(name, cls, group, str(d.get("arch") or ""), str(d.get("dataset") or ""))


def _policy_args(kind: str, args: Any, where: str) -> dict[str, Any]:
    """The policy's ``args``: each one Distiller reads executed, accepted or refused by name."""
    if args is None:
        return {}
    readable = POLICY_ARGS.get(kind)
    if readable is None:
        raise ValueError(f"{where}: Distiller reads no args for a {kind} policy; remove them")
    if not isinstance(args, dict):
        raise ValueError(f"{where}: must be a mapping of argument names to values")
    _check_keys(args, set(readable), where)
    for key, value in args.items():
        if readable[key] is None and value != _ARG_DEFAULTS[key]:
            raise ValueError(f"{where}.{key}: {value!r} is not supported: {_ARG_REFUSED[key]}")
        if key in ("fold_batchnorm", "keep_mask", "mask_on_forward_only", "mask_gradients") and not isinstance(
            value, bool
        ):
            raise ValueError(f"{where}.{key}: must be true or false, got {value!r}")
    if args.get("mask_gradients") and not args.get("mask_on_forward_only"):
        raise ValueError(f"{where}.mask_gradients: needs mask_on_forward_only: true, as in Distiller")
    return dict(args)


def _parse_policy(i: int, d: Any, sched: Schedule) -> Policy:
    where = f"schedule.policies[{i}]"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a mapping")
    if "quantizer" in d:
        raise ValueError(
            f"{where}.quantizer: quantization-aware training is not supported; a PostTrainLinearQuantizer "
            "in quantizers needs no policy (INT8 after fine-tuning)"
        )
    kinds = [k for k in _POLICY_KINDS if k in d]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of {', '.join(_POLICY_KINDS)}")
    kind = kinds[0]
    _check_keys(d, {kind, "epochs", "starting_epoch", "ending_epoch", "frequency"}, where)
    ref = d[kind]
    if isinstance(ref, dict):
        _check_keys(ref, {"instance_name", "args"}, f"{where}.{kind}")
    instance = ref.get("instance_name") if isinstance(ref, dict) else None
    registries: dict[str, dict[str, Any]] = {
        "pruner": sched.pruners,
        "regularizer": sched.regularizers,
        "extension": sched.extensions,
        "lr_scheduler": sched.lr_schedulers,
    }
    known = registries[kind]
    if not isinstance(instance, str) or instance not in known:
        raise ValueError(
            f"{where}.{kind}.instance_name: {instance!r} is not a defined {kind}; defined: {', '.join(known) or 'none'}"
        )
    args = _policy_args(kind, ref.get("args"), f"{where}.{kind}.args")
    flags = {"fold_batchnorm": bool(args.get("fold_batchnorm")), "keep_mask": bool(args.get("keep_mask"))}
    if kind == "pruner":
        flags["keep_mask"] = False  # a pruner's masks are always kept
    if "epochs" in d:
        epochs = d["epochs"]
        if not isinstance(epochs, list) or not all(isinstance(e, int) and e >= 0 for e in epochs):
            raise ValueError(f"{where}.epochs: must be a list of epoch numbers")
        return Policy(kind, instance, epochs=tuple(epochs), index=i, **flags)
    for key in ("starting_epoch", "ending_epoch", "frequency"):
        if key in d and (isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < 0):
            raise ValueError(f"{where}.{key}: must be a whole number >= 0")
    return Policy(
        kind,
        instance,
        None,
        d.get("starting_epoch", 0),
        d.get("ending_epoch", 1 << 30),
        max(1, d.get("frequency", 1)),
        index=i,
        **flags,
    )


def parse_schedule(doc: Any) -> Schedule:
    """Validate a concrete schedule (no ``${...}`` left) and return it typed."""
    if not isinstance(doc, dict):
        raise ValueError("schedule: must be a mapping")
    sections = {"version", "pruners", "regularizers", "extensions", "lr_schedulers", "quantizers", "policies"}
    _check_keys(doc, sections, "schedule")
    if doc.get("version", 1) != 1:  # Distiller never reads it, and five of its sixteen CIFAR recipes lack it
        raise ValueError(f"schedule.version: 1 (Distiller's format) or absent, got {doc.get('version')!r}")
    for section in sections - {"version", "policies"}:
        if doc.get(section) is not None and not isinstance(doc[section], dict):
            raise ValueError(f"schedule.{section}: must be a mapping of instance names to their definitions")
    if doc.get("policies") is not None and not isinstance(doc["policies"], list):
        raise ValueError("schedule.policies: must be a list")
    sched = Schedule(raw=doc)
    sched.pruners = {n: _parse_pruner(n, d) for n, d in (doc.get("pruners") or {}).items()}
    sched.regularizers = {n: _parse_regularizer(n, d) for n, d in (doc.get("regularizers") or {}).items()}
    sched.extensions = {n: _parse_thinner(n, d) for n, d in (doc.get("extensions") or {}).items()}
    for name, d in (doc.get("lr_schedulers") or {}).items():
        sched.lr_schedulers[name] = _parse_lr_scheduler(name, d)
    sched.quantizer = _parse_quantizers(doc.get("quantizers"))
    sched.policies = [_parse_policy(i, d, sched) for i, d in enumerate(doc.get("policies") or [])]
    used = {(p.kind, p.instance) for p in sched.policies}
    for kind, names in (("pruner", sched.pruners), ("regularizer", sched.regularizers)):
        for n in names:
            if (kind, n) not in used:
                raise ValueError(f"schedule.{kind}s.{n}: defined but no policy uses it")
    for n in sched.lr_schedulers:
        if ("lr_scheduler", n) not in used:
            raise ValueError(f"schedule.lr_schedulers.{n}: defined but no policy uses it")
    return sched


def _parse_lr_scheduler(name: str, d: Any) -> LRSchedulerSpec:
    import inspect

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
    accepted = set(inspect.signature(getattr(lrs, cls)).parameters) - {"optimizer", "self"}
    _check_keys(kwargs, accepted, where)  # torch would only complain in the middle of a trial
    return LRSchedulerSpec(name, cls, kwargs)
