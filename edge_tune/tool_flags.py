"""What the analysis tools (``edge_tune.sensitivity``, ``edge_tune.study``) share with the search: the model
and data flags, and the baseline they lead to, checked the same way as ``edge_tune.run`` checks them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_tune.config import DEFAULT_CACHE, default

__all__ = ["add_model_flags", "add_normalisation_flags", "baseline_from_flags", "normalisation_from_flags"]


def add_normalisation_flags(p: argparse.ArgumentParser) -> None:
    """--mean and --std: the normalisation the model's weights were trained with."""
    for flag, example, fallback in (
        ("--mean", "0.485,0.456,0.406", "the training split's own, ImageNet's for image folders"),
        ("--std", "0.229,0.224,0.225", "likewise"),
    ):
        p.add_argument(
            flag,
            default="",
            metavar="V[,V,V]",
            help=f"per-channel {flag[2:]} of pixels in [0, 1] that the weights were trained with, e.g. {example}; "
            f"one value for all channels (default: the space file's, else {fallback})",
        )


def normalisation_from_flags(mean: str, std: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) from the flags' texts: both or neither."""
    from edge_tune.data import parse_stats
    from edge_tune.errors import UserError

    if bool(mean) != bool(std):
        given, missing = (f"--mean {mean}", "--std") if mean else (f"--std {std}", "--mean")
        raise UserError(f"{given} needs {missing} too: give both, the normalisation your weights were trained with")
    if not mean:
        return None, None
    return parse_stats(mean, "--mean"), parse_stats(std, "--std")


def add_model_flags(p: argparse.ArgumentParser, model: str, dataset: str) -> None:
    """--model, --weights, --dataset, --data-dir, --input-size, --mean/--std, --baseline-epochs, --cache-dir."""
    p.add_argument("--model", default=model, help=f"zoo model or package.module:function (default {model or '-'})")
    p.add_argument(
        "--weights", type=Path, default=None, metavar="FILE", help="the model's trained weights (else trained here)"
    )
    p.add_argument(
        "--dataset", default=dataset, help=f"a dataset name, as for edge_tune.run (default {dataset or '-'})"
    )
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--input-size", default="", metavar="H|HxW", help="input pixels (default: the dataset's own)")
    add_normalisation_flags(p)
    p.add_argument("--baseline-epochs", type=int, default=default("baseline_epochs"))
    p.add_argument("--cache-dir", type=Path, default=None)


def baseline_from_flags(args: argparse.Namespace, model: str, dataset: str, weights: Path | None) -> tuple[Any, Any]:
    """(baseline, data) for ``model`` on ``dataset``: the data fitted to the model, the weights evaluated or
    a baseline trained (cached)."""
    from edge_tune.baseline import load_baseline
    from edge_tune.contract import fit_data_to_model
    from edge_tune.data import load_dataset, parse_input_size
    from edge_tune.train import TrainConfig

    size = parse_input_size(args.input_size) if args.input_size else None
    mean, std = normalisation_from_flags(args.mean, args.std)
    _, data = fit_data_to_model(model, load_dataset(dataset, args.data_dir, size, mean=mean, std=std))
    recipe = TrainConfig(epochs=args.baseline_epochs)
    return load_baseline(model, data, weights, recipe, args.cache_dir or DEFAULT_CACHE), data
