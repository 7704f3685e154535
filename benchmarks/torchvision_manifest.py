"""Write ``tests/data/torchvision_manifest.json``: torchvision's names, shapes and outputs of the ImageNet zoo.

torchvision cannot be imported beside the CPU torch build edge_tune uses, so this
script runs in an environment of its own, and the test suite checks the zoo
against what it wrote:

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tv/bin/python benchmarks/torchvision_manifest.py

For each model: every state-dict key with its shape, in order, and the logits of
a fixed input after loading deterministic weights (``formula_state``), so that
the test checks the forward computation too, not only the names. It imports
nothing of edge_tune's; the test imports ``formula_tensor`` and ``formula_input`` from this file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "torchvision_manifest.json"
MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small")
NUM_CLASSES = 1000
SIZE = 224


def formula_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Deterministic, well-scaled values for one state-dict entry (the test builds the same)."""
    n = math.prod(shape)
    if dtype == torch.long:  # num_batches_tracked
        return torch.zeros(shape, dtype=dtype)
    t = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7311 + len(key))
    if key.endswith("running_var"):
        return (1.0 + 0.5 * t.abs()).reshape(shape).to(dtype)
    if key.endswith("running_mean") or key.endswith(".bias"):
        return (0.1 * t).reshape(shape).to(dtype)
    if len(shape) == 1:  # batch-norm scale
        return (1.0 + 0.1 * t).reshape(shape).to(dtype)
    fan_in = n // shape[0]
    return (t * math.sqrt(2.0 / fan_in)).reshape(shape).to(dtype)


def formula_input() -> torch.Tensor:
    return torch.sin(torch.arange(3 * SIZE * SIZE, dtype=torch.float64) * 0.013).reshape(1, 3, SIZE, SIZE).float()


def main() -> None:
    import torchvision

    manifest: dict[str, object] = {"torchvision": torchvision.__version__, "torch": torch.__version__}
    for name in MODELS:
        model = getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES).eval()
        state = model.state_dict()
        model.load_state_dict({k: formula_tensor(k, tuple(v.shape), v.dtype) for k, v in state.items()})
        with torch.no_grad():
            logits = model(formula_input())[0]
        manifest[name] = {
            "keys": [[k, list(v.shape)] for k, v in state.items()],
            "logits_first_10": [round(float(x), 6) for x in logits[:10]],
            "logits_mean": float(logits.mean()),
            "logits_std": float(logits.std()),
        }
        print(f"{name}: {len(state)} tensors, logits std {float(logits.std()):.4g}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
