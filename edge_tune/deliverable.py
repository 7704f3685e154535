"""The deliverable: a trial's compressed model in every form a deployment needs.

    python -m edge_tune.deliverable EXPERIMENT_DIR [--trial ID] [--out DIR]

Every run writes ``best/`` for its best feasible trial (the closest infeasible
one when none is feasible); this command writes the same for any finished
trial (default: ``EXPERIMENT_DIR/export/<ID>``). The folder holds

- ``model.onnx``: the pruned network, checked against PyTorch's shapes (O0);
- ``model.xml``/``model.bin``: OpenVINO IR, f32, converted from that ONNX;
- ``model_int8.xml``/``model_int8.bin``: the INT8 IR the device ran, when the space quantizes;
- ``state_dict.pt`` and ``architecture.json``: the PyTorch weights and what the network is built from;
- ``rebuild.py``: loads them back into the pruned architecture (``edge_tune.deliverable.load_pruned``);
- ``schedule.yaml``: the Distiller-format schedule that reproduces the trial from the baseline;
- ``metrics.json``: the trial's configuration and measurements.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from edge_tune.errors import UserError, exit_code

__all__ = ["export", "load_pruned", "main", "write_deliverable"]

REBUILD = '''"""Rebuild the pruned PyTorch model of this folder: python rebuild.py (needs edge_tune installed)."""

from pathlib import Path

import torch

from edge_tune.deliverable import load_pruned

model, arch = load_pruned(Path(__file__).parent)
logits = model(torch.zeros(1, *arch["input_shape"]))
params = sum(p.numel() for p in model.parameters())
print(f"{arch['model']} pruned: {params:,} parameters, logits {tuple(logits.shape)}")
'''


def load_pruned(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The pruned ``nn.Module`` (eval mode) of a deliverable folder, and its ``architecture.json``."""
    import torch

    from edge_tune.models import create_model, fit_to_state_dict

    arch = json.loads((folder / "architecture.json").read_text())
    model = create_model(arch["model"], num_classes=arch["num_classes"], in_channels=arch["in_channels"])
    state = torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
    return fit_to_state_dict(model, state), arch


def write_deliverable(checkpoint: Path, out: Path, metrics: dict[str, Any]) -> Path:
    """Write the deliverable of the trial whose checkpoint folder is ``checkpoint`` into ``out``."""
    import openvino as ov

    out.mkdir(parents=True, exist_ok=True)
    for name in (
        "model.onnx",
        "model_int8.xml",
        "model_int8.bin",
        "state_dict.pt",
        "architecture.json",
        "schedule.yaml",
    ):
        if (checkpoint / name).exists():
            shutil.copyfile(checkpoint / name, out / name)
    ov.save_model(ov.convert_model(out / "model.onnx"), out / "model.xml", compress_to_fp16=False)
    (out / "rebuild.py").write_text(REBUILD)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_tune.deliverable", description=__doc__.split("\n")[0])
    p.add_argument("experiment", type=Path, help="the experiment folder (edge_tune_results/<name>)")
    p.add_argument("--trial", help="trial ID as in results.csv (default: the best ranked)")
    p.add_argument("--out", type=Path, help="output folder (default: EXPERIMENT/export/<trial>)")
    args = p.parse_args(argv)
    return exit_code("edge_tune.deliverable", lambda: export(args.experiment, args.trial, args.out))


def export(experiment: Path, trial: str | None, out: Path | None) -> Path:
    """Write the deliverable of ``trial`` (default: the best ranked) of a finished experiment."""
    from edge_tune.results import read_results, trial_metrics

    rows, reference = read_results(experiment)
    match = [r for r in rows if trial in (None, r.trial_id)]
    if not match:
        ids = ", ".join(r.trial_id for r in rows) or "none"
        raise UserError(f"--trial {trial}: no such trial in {experiment / 'results.json'}; its trials are {ids}")
    row = match[0]
    if row.status != "ok" or row.checkpoint is None or not (row.checkpoint / "model.onnx").is_file():
        raise UserError(
            f"--trial {row.trial_id}: the trial did not finish ({row.status}: "
            f"{row.error or 'no model saved'}), so there is no model to export"
        )
    out = out or experiment / "export" / row.trial_id
    write_deliverable(row.checkpoint, out, trial_metrics(row, reference))
    print(f"trial {row.trial_id}: {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")
    return out


if __name__ == "__main__":
    sys.exit(main())
