"""One fine-tuning epoch of ResNet-18 at 224x224, on the CPU and on a GPU (mixed precision, channels-last).

    python benchmarks/gpu_finetune.py --data-dir FASHION_MNIST_IDX_DIR [--images 2000] [--devices cpu cuda]

Fashion-MNIST's first ``--images`` training images, resized to 224x224 and
repeated over 3 channels (what ``edge_tune.run --model resnet18 --dataset
fashion-mnist --input-size 224`` trains on), one epoch of ``fine_tune`` from the
same initial weights on each device; then top-1 on 1,000 test images. Writes
``docs/benchmarks/gpu_finetune.md`` and ``.json``. Meant for a machine with a
GPU; on one without, ``--devices cpu`` measures the CPU side alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from edge_tune.data import Dataset, load_dataset, resize, with_channels
from edge_tune.models import create_model
from edge_tune.train import TrainConfig, evaluate, fine_tune

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def subset(data_dir: Path | None, images: int):  # type: ignore[no-untyped-def]
    data = load_dataset("fashion-mnist", data_dir)
    small = Dataset.from_tensors(data.name, data.x_train[:images], data.y_train[:images], data.x_val[:1000],
                                 data.y_val[:1000], data.num_classes, mean=data.mean, std=data.std)  # fmt: skip
    return with_channels(resize(small, (224, 224)), 3)


def one_epoch(device: str, data, state: dict) -> dict:  # type: ignore[no-untyped-def]
    model = create_model("resnet18", num_classes=10, in_channels=3)
    model.load_state_dict(state)
    model.to(device)
    if device == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.cuda.synchronize()
    start = time.perf_counter()
    fine_tune(model, data, TrainConfig(epochs=1, lr=0.01, augment=False))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start  # the epoch and its validation pass
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "seconds": seconds,
        "images_per_s": len(data.x_train) / seconds,
        "top1": evaluate(model, data.val).top1,
        "mixed_precision": device == "cuda",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    args = p.parse_args()
    data = subset(args.data_dir, args.images)
    torch.manual_seed(0)
    state = create_model("resnet18", num_classes=10, in_channels=3).state_dict()
    rows = [one_epoch(d, data, state) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    result = {"images": args.images, "cpu": platform.processor() or platform.machine(), "rows": rows,
              "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# One fine-tuning epoch of ResNet-18 at 224x224: CPU against GPU",
        "",
        f"`python benchmarks/gpu_finetune.py --images {args.images}`: Fashion-MNIST's first {args.images} training "
        "images at 224x224 (3 channels), one epoch of `fine_tune` from the same initial weights, then top-1 on "
        f"1,000 test images. torch {torch.__version__}, {torch.get_num_threads()} CPU threads.",
        "",
        "| device | mixed precision, channels-last | epoch, s | images/s | top-1 % |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['device']} | {'yes' if r['mixed_precision'] else 'no'} | {r['seconds']:.1f} | "
        f"{r['images_per_s']:.1f} | {r['top1']:.2f} |"
        for r in rows
    ]
    (OUT / "gpu_finetune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
