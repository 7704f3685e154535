"""``--check``: everything that can be validated without training, and what would run.

The space (or ``--schedule`` file), the model and its weights, the data and
the schedule are checked as a run checks them before its baseline, and the
schedule is executed at once on a throwaway copy of the model: every
pruner's layers resolve, every group can be pruned, every policy ends within
fine-tuning. Then the plan is printed: the pruners with their layers and
final sparsities, the regularizers, thinners and lr schedulers, and the final
architecture with its MACs. Nothing is trained, no Ray is started and no
device is opened.

>>> check_run(config_from_args(build_parser().parse_args(["--schedule", "s.yaml", "--check"])))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from edge_tune.compression import (
    PruneReport,
    Schedule,
    apply_pruners,
    check_schedule_fits,
    count_macs_params,
    parse_schedule,
    resolve_weights,
)
from edge_tune.compression.regularize import Regularization
from edge_tune.config import ExperimentConfig
from edge_tune.space import SearchSpace, located

__all__ = ["Plan", "check_run", "plan_schedule", "thinner_warnings"]


@dataclass
class Plan:
    """A schedule executed at once on a copy of the model: what a trial of it would do."""

    schedule: Schedule
    layers: dict[str, list[str]]  # pruner -> the layers its weights resolve to
    pruned: PruneReport  # the final architecture (that of the structured pruners; regularizers add to it)
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)  # conv -> (filters before, after)
    warnings: list[str] = field(default_factory=list)


def _arch(name: str) -> str:
    """A network's name as Distiller's ``arch`` and edge_tune's ``--model`` both spell it."""
    return name.rpartition(":")[2].removesuffix("_cifar")


def thinner_warnings(schedule: Schedule, model: str, dataset: str) -> list[str]:
    """A thinner's ``arch``/``dataset`` that are not this run's: Distiller's names, checked, never needed."""
    out = []
    for name, t in schedule.extensions.items():
        where = f"schedule.extensions.{name}"
        if t.arch and _arch(t.arch) != _arch(model):
            out.append(
                f"{where}.arch is {t.arch!r}, but the model is {model!r}; check its layer names are this model's"
            )
        if t.dataset and t.dataset.lower().replace("_", "-") != dataset:
            out.append(
                f"{where}.dataset is {t.dataset!r}, but the data are {dataset!r}; thinning does not depend on it"
            )
    return out


def plan_schedule(
    space: SearchSpace,
    config: dict,  # type: ignore[type-arg]
    model: nn.Module,
    example: torch.Tensor,
    epochs: int,
    truncate_lr: bool = False,
) -> Plan:
    """Execute the schedule of ``config`` at once on a copy of ``model``; every error names file and key."""
    try:
        schedule = parse_schedule(space.render(config)[0])
        check_schedule_fits(schedule, epochs, truncate_lr)
        copied = copy.deepcopy(model)
        Regularization(copied, schedule.regularizers)  # its weight names resolve
        layers = {}
        for spec in schedule.pruners.values():
            kinds: tuple[type, ...] = (nn.Linear,) if spec.group_type == "Rows" else (nn.Conv2d, nn.Linear)
            weights = tuple(w for w, _ in spec.sensitivities if w != "*") if spec.sensitivities else spec.weights
            where = f"schedule.pruners.{spec.name}.weights"
            layers[spec.name] = [n for n, _ in resolve_weights(copied, weights, where, kinds)] if weights else ["*"]
        before = {n: m.out_channels for n, m in copied.named_modules() if isinstance(m, nn.Conv2d)}
        pruned = apply_pruners(copied, list(schedule.pruners.values()), example)
    except ValueError as exc:
        raise located(space.path, space.path.read_text(), exc, space.schedule_file) from exc
    after = {n: m.out_channels for n, m in copied.named_modules() if isinstance(m, nn.Conv2d)}
    channels = {n: (before[n], after[n]) for n in before if n in after}
    return Plan(schedule, layers, pruned, channels)


def _configs(space: SearchSpace) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    if space.fixed:
        return [("the configuration", {})]
    return [("the midpoint", space.midpoint()), ("the low corner", space.corner("low")),
            ("the high corner", space.corner("high"))]  # fmt: skip


def check_run(cfg: ExperimentConfig) -> int:
    """Validate ``cfg`` as a run would, without training; print the plan. 0 when all holds (errors raise)."""
    from edge_tune.contract import fit_data_to_model
    from edge_tune.data import load_dataset
    from edge_tune.experiment import finetune_epochs
    from edge_tune.objective import parse_threshold
    from edge_tune.weights import check_fits, read_state_dict

    space, model_name = cfg.space, cfg.model or cfg.space.model
    data = load_dataset(cfg.dataset or space.dataset, cfg.data_dir, cfg.input_size, mean=cfg.mean, std=cfg.std)
    parse_threshold(cfg.accuracy_threshold)
    model, data = fit_data_to_model(model_name, data, lambda _: None)
    if cfg.weights is not None:
        check_fits(read_state_dict(cfg.weights), model, cfg.weights)
    epochs = finetune_epochs(cfg, replace(cfg.finetune, seed=cfg.seed))
    example = torch.zeros(1, *data.input_shape)
    plans = [(what, plan_schedule(space, c, model, example, epochs, cfg.truncate_lr)) for what, c in _configs(space)]
    what, plan = plans[0]
    macs, params = count_macs_params(model, example)
    kind = "schedule" if space.schedule_file else "space"
    print(f"{kind} {space.path}: valid ({len(plans)} configuration(s) executed on a copy of the model)")
    print(f"model {model_name} on {data.name}, input {tuple(data.input_shape)}; {macs:,} MACs, {params:,} parameters")
    trials = "1 trial" if space.fixed else f"{cfg.num_samples} trials, searcher {cfg.searcher}"
    print(f"would run: {trials}, {epochs} fine-tuning epoch(s) each (the schedule needs "
          f"{plan.schedule.last_epoch() + 1})")  # fmt: skip
    for line in thinner_warnings(plan.schedule, model_name, data.name):
        print(f"warning: {line}")
    print(f"at {what}:" if not space.fixed else "schedule:")
    _print_plan(plan)
    return 0


def _print_plan(plan: Plan) -> None:
    s = plan.schedule
    for name, spec in s.pruners.items():
        policy = s.policy_of(name)
        ramp = f"{spec.initial_sparsity:.0%} -> " if spec.gradual else ""
        when = f"epochs {policy.epochs}" if policy.epochs else f"from epoch {policy.starting_epoch} to {policy.last()}"
        fold = ", BN folded" if policy.fold_batchnorm else ""
        print(f"  pruner {name}: {spec.cls}, {spec.group_type}, {ramp}{spec.sparsity:.0%}{fold}, {when}")
        print(f"    layers: {', '.join(plan.layers[name])}")
    for name, reg in s.regularizers.items():
        regims = ", ".join(f"{w} {g} x{v:g}" for w, v, g in reg.regims)
        print(f"  regularizer {name}: {reg.cls} ({regims}), threshold {reg.threshold_criteria or 'none'}")
    for name, t in s.extensions.items():
        print(f"  thinner {name}: {t.cls} removes {t.group_type}")
    for name, lr in s.lr_schedulers.items():
        print(f"  lr scheduler {name}: {lr.cls} {lr.kwargs}")
    if s.quantizer is not None:
        print(f"  quantizer {s.quantizer.name}: INT8 after fine-tuning (NNCF)")
    r = plan.pruned
    changed = {n: c for n, c in plan.channels.items() if c[0] != c[1]}
    for n, (b, a) in changed.items():
        print(f"    {n}: {b} -> {a} filters")
    ratio = r.macs_after / max(r.macs_before, 1)
    print(f"  final architecture: {r.macs_after:,} MACs ({ratio:.1%} of {r.macs_before:,}), {r.params_after:,} "
          f"parameters; {r.zeros:,} held at zero" + ("" if s.planned else
          "; the regularizers' thinning adds to it, as training decides"))  # fmt: skip
