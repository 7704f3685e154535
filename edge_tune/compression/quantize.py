"""Post-training INT8 quantization: NNCF on the OpenVINO model of the exported ONNX.

Distiller's ``PostTrainLinearQuantizer`` becomes ``nncf.quantize`` on the
``ov.Model`` read from the trial's ONNX, calibrated on training images (never
the validation images the threshold is judged on). ``mode: SYMMETRIC`` is
NNCF's PERFORMANCE preset (symmetric weights and activations); the asymmetric
modes are its MIXED preset (asymmetric activations). The result travels to the
device as an OpenVINO IR blob (``device.engine.pack_ir``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge_tune.compression.schedule import QuantizerSpec
from edge_tune.device.engine import pack_ir

__all__ = ["quantize_onnx"]


def quantize_onnx(onnx_bytes: bytes, spec: QuantizerSpec, images: np.ndarray) -> bytes:
    """The INT8 OpenVINO IR (packed) of an ONNX model; ``images`` (N, C, H, W) float32 calibrate it."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    model = ov.Core().read_model(onnx_bytes)
    n = min(spec.calibration_images, len(images))
    calibration = nncf.Dataset([np.ascontiguousarray(images[i : i + 1], dtype=np.float32) for i in range(n)])
    preset = nncf.QuantizationPreset.PERFORMANCE if spec.symmetric else nncf.QuantizationPreset.MIXED
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=spec.per_channel_wts)
    )
    quantized = nncf.quantize(model, calibration, preset=preset, subset_size=n, advanced_parameters=advanced)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        return pack_ir(xml.read_bytes(), xml.with_suffix(".bin").read_bytes())
