"""The schedule's ``regularizers``: Distiller's group lasso and L1 penalties, during fine-tuning.

While a regularizer's policy fires (at epoch granularity, as in Distiller)
its penalty is added to the training loss of every step:

- ``GroupLassoRegularizer``, Filters (or ``3D``): strength x the sum over
  filters of their L2 norms; Channels: the same over input channels (all
  kernels applied to one input channel). This drives whole structures to
  zero (Wen et al., *Learning Structured Sparsity in Deep Neural Networks*).
- ``L1Regularizer``: strength x the sum of |w| of each named parameter, which
  may be a batch norm's scale (network slimming).

With ``threshold_criteria`` (``Mean_Abs``: mean |w| of the group; ``Max``:
its largest |w|; L1: each element's |w|) every group at or below the
strength is set to zero after each optimizer step. A regularizer policy with
``args: {keep_mask: true}`` keeps that mask after its last epoch, so the
zeros stay zeros; a thinner (``net_thinner``), or the end of fine-tuning,
then removes the zero filters or channels physically.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_tune.compression.schedule import Policy, RegularizerSpec

__all__ = ["Regularization"]

_EPSILON = 1e-8  # under the square root of a channel's norm, as Distiller does


class Regularization:
    """Penalties and thresholds of a schedule's regularizers on one model."""

    def __init__(self, model: nn.Module, regularizers: dict[str, RegularizerSpec]) -> None:
        self.specs = regularizers
        owners = {n: m for n, m in model.named_modules()}
        self._params: dict[tuple[str, str], tuple[nn.Module, str]] = {}
        for spec in regularizers.values():
            for weight, _, group in spec.regims:
                module_name, _, pname = weight.removeprefix("module.").rpartition(".")
                module = owners.get(module_name)
                where = f"schedule.regularizers.{spec.name}.reg_regims.{weight}"
                if module is None or not isinstance(getattr(module, pname, None), torch.Tensor):
                    names = [n for n, _ in model.named_parameters()]
                    raise ValueError(f"{where}: no such parameter in the model; its parameters are {', '.join(names)}")
                if group != "Elements" and not isinstance(module, nn.Conv2d):
                    raise ValueError(f"{where}: {group} groups are those of a convolution's weight")
                self._params[(spec.name, weight)] = (module, pname)

    def _param(self, spec: RegularizerSpec, weight: str) -> torch.Tensor:
        module, pname = self._params[(spec.name, weight)]
        param = getattr(module, pname)
        assert isinstance(param, torch.Tensor)
        return param

    def loss(self, active: list[tuple[RegularizerSpec, Policy]]) -> torch.Tensor | None:
        """The penalty of the regularizers whose policies fire this epoch (None when none does)."""
        total: torch.Tensor | None = None
        for spec, _ in active:
            for weight, strength, group in spec.regims:
                term = strength * _penalty(self._param(spec, weight), group)
                total = term if total is None else total + term
        return total

    @torch.no_grad()
    def threshold(self, active: list[tuple[RegularizerSpec, Policy]]) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """Zero every group at or below its strength (regularizers with ``threshold_criteria``); returns the
        masks applied, (module, parameter name, keep mask), for a policy that keeps them."""
        masks = []
        for spec, _ in active:
            if spec.threshold_criteria is None:
                continue
            for weight, strength, group in spec.regims:
                param = self._param(spec, weight)
                keep = _keep(param, group, strength, spec.threshold_criteria)
                param.mul_(keep)
                masks.append((*self._params[(spec.name, weight)], keep))
        return masks


def _penalty(w: torch.Tensor, group: str) -> torch.Tensor:
    if group == "Filters":
        return w.flatten(1).norm(2, dim=1).sum()
    if group == "Channels":  # w: (out, in, kh, kw)
        return (w.pow(2).sum(dim=(0, 2, 3)) + _EPSILON).sqrt().sum()
    return w.abs().sum()


def _keep(w: torch.Tensor, group: str, strength: float, criteria: str) -> torch.Tensor:
    """A mask of ``w``'s shape: False where the group's norm is at or below ``strength``."""
    a = w.abs()
    if group == "Elements":
        return a > strength
    dims = (1, 2, 3) if group == "Filters" else (0, 2, 3)
    norm = a.amax(dim=dims) if criteria == "Max" else a.mean(dim=dims)
    shape = (-1, 1, 1, 1) if group == "Filters" else (1, -1, 1, 1)
    return (norm > strength).view(shape).expand_as(w)
