"""What the analysis tools (``edge_tune.sensitivity``, ``edge_tune.study``) share with the search: the model
and data flags, and the baseline they lead to, checked the same way as ``edge_tune.run`` checks them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_tune.config import DEFAULT_CACHE, default

__all__ = ["add_model_flags", "baseline_from_flags"]


def add_model_flags(p: argparse.ArgumentParser, model: str, dataset: str) -> None:
    """--model, --weights, --dataset, --data-dir, --input-size, --baseline-epochs and --cache-dir."""
    p.add_argument("--model", default=model, help=f"zoo model or package.module:function (default {model or '-'})")
    p.add_argument(
        "--weights", type=Path, default=None, metavar="FILE", help="the model's trained weights (else trained here)"
    )
    p.add_argument(
        "--dataset", default=dataset, help=f"a dataset name, as for edge_tune.run (default {dataset or '-'})"
    )
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--input-size", default="", metavar="H|HxW", help="input pixels (default: the dataset's own)")
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
    _, data = fit_data_to_model(model, load_dataset(dataset, args.data_dir, size))
    recipe = TrainConfig(epochs=args.baseline_epochs)
    return load_baseline(model, data, weights, recipe, args.cache_dir or DEFAULT_CACHE), data
