"""``DeviceRunner``: compiles ONNX models on one OpenVINO device and measures them.

Plain Python, so it is tested without Ray; ``device.actor`` serves it as the
shared ``EdgeDevice`` actor. Every method is one device job: callers
serialise them (the actor holds a lock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_tune.device.profile import LayerTiming, profile_layers
from edge_tune.device.timing import TimingPlan, cv, interleave
from edge_tune.errors import UserError
from edge_tune.export import content_hash, structure_hash

__all__ = ["DeviceAccuracy", "DeviceConfig", "DeviceRunner", "LatencyResult", "ModelError", "openvino_macs"]


class ModelError(ValueError):
    """The ONNX model cannot be run here: corrupt, not ONNX, or the wrong input shape."""


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "CPU"  # any OpenVINO device name: CPU, GPU, NPU, AUTO:...
    precision: str = "f32"  # INFERENCE_PRECISION_HINT: f32 | f16 | bf16
    threads: int = 1  # INFERENCE_NUM_THREADS on CPU; also the CPUs the actor reserves
    resource: str = "edge_device"  # custom Ray resource the actor owns
    actor_name: str = "edge_device"  # the actor's name in Ray: one per physical device
    timing: TimingPlan = field(default_factory=TimingPlan)  # warm-up, rounds, stopping rule
    profile_inferences: int = 10  # inferences whose per-layer counters are medianed
    cache: bool = True  # measure an architecture once; off for repeatability benchmarks
    seed: int = 0  # the timed input tensor


@dataclass(frozen=True)
class LatencyResult:
    latency_ms_p50: float  # candidate, batch 1, over all timed inferences
    latency_ms_p90: float
    throughput_fps: float  # 1000 / p50: one request at a time, batch 1
    baseline_latency_ms_p50: float  # measured in the same rounds
    speedup: float  # median over rounds of baseline / candidate latency
    speedup_ci_low: float  # 95% confidence interval of that median
    speedup_ci_high: float
    speedup_cv: float  # coefficient of variation of the per-round ratios
    latency_cv: float  # coefficient of variation of the candidate's per-round medians
    rounds: int
    converged: bool  # the CI reached the target before the time cap
    device: str
    precision: str  # what the compiled model reports it runs in
    threads: int
    compile_s: float  # read + compile of the candidate
    first_inference_ms: float  # the candidate's first (cold) inference
    ov_macs: int  # conv + fully-connected MACs counted on OpenVINO's graph (O0)
    layers: tuple[LayerTiming, ...] = ()  # per-layer profile of the candidate (O4)
    cached: bool = False  # an identical architecture was measured before


@dataclass(frozen=True)
class DeviceAccuracy:
    top1: float  # percent, compiled model on the device
    top5: float
    images: int


def openvino_macs(ov_model: Any) -> int:
    """Conv and fully-connected MACs of one image, counted on an ``ov.Model``."""
    total = 0
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("Convolution", "GroupConvolution"):
            out = list(op.get_output_partial_shape(0).to_shape())  # (N, C_out, H, W)
            w = list(
                op.input(1).get_partial_shape().to_shape()
            )  # (C_out, C_in, kh, kw) or (G, C_out/G, C_in/G, kh, kw)
            total += int(np.prod(out[1:])) * int(np.prod(w[-3:]))
        elif kind == "MatMul":
            out = list(op.get_output_partial_shape(0).to_shape())  # (N, features)
            a = list(op.input(0).get_partial_shape().to_shape())
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            total += int(np.prod(out[1:])) * int(k)
    return total


class DeviceRunner:
    """One OpenVINO device: benchmark against the baseline, evaluate, profile."""

    def __init__(
        self,
        cfg: DeviceConfig,
        baseline_onnx: bytes | None = None,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        # Baseline and validation data come in through the constructor so that
        # an actor Ray restarts after a crash is whole again before it serves.
        import openvino as ov

        self.cfg = cfg
        self.core = ov.Core()
        available = list(self.core.available_devices)
        family = cfg.device.split(":")[0].split(".")[0]
        if family not in ("AUTO", "MULTI", "HETERO") and cfg.device not in available and family not in available:
            raise UserError(
                f"--device {cfg.device}: OpenVINO has no such device here; available: {', '.join(available)}"
            )
        self._baseline: Any = None
        self._input: np.ndarray | None = None
        self._eval: tuple[np.ndarray, np.ndarray] | None = None
        self._latency_cache: dict[str, LatencyResult] = {}
        self._accuracy_cache: dict[str, DeviceAccuracy] = {}
        self.baseline_layers: tuple[LayerTiming, ...] = ()
        self.stats: dict[str, float] = {"benchmarks": 0, "evaluations": 0, "cache_hits": 0, "busy_s": 0.0}
        self.started = time.time()
        if baseline_onnx is not None:
            self.set_baseline(baseline_onnx)
        if eval_data is not None:
            self.set_eval_data(*eval_data)

    def info(self) -> dict[str, Any]:
        name = self.cfg.device
        if name in self.core.available_devices:
            name = str(self.core.get_property(name, "FULL_DEVICE_NAME"))
        up = max(time.time() - self.started, 1e-9)
        return {
            "device": self.cfg.device,
            "name": name,
            "available": list(self.core.available_devices),
            "precision": self.cfg.precision,
            "threads": self.cfg.threads,
            **self.stats,
            "busy_fraction": self.stats["busy_s"] / up,
        }

    def _read(self, onnx_bytes: bytes) -> Any:
        try:
            model = self.core.read_model(onnx_bytes)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip() and "src/" not in ln)
            raise ModelError(f"the device cannot read this model as ONNX: {detail[:300]}") from None
        shape = (
            tuple(model.input(0).get_partial_shape().to_shape())
            if model.input(0).get_partial_shape().is_static
            else None
        )
        if self._input is not None and shape != self._input.shape:
            raise ModelError(f"model input shape {shape} differs from the baseline's {self._input.shape}")
        if self._eval is not None and shape is not None and tuple(shape[1:]) != self._eval[0].shape[1:]:
            raise ModelError(f"model input shape {shape} does not fit the dataset's images {self._eval[0].shape[1:]}")
        return model

    def _compile(self, model: Any, profile: bool = False) -> Any:
        props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.cfg.precision}
        if self.cfg.device == "CPU":
            props |= {"INFERENCE_NUM_THREADS": self.cfg.threads, "NUM_STREAMS": 1}
        if profile:
            props["PERF_COUNT"] = True
        return self.core.compile_model(model, self.cfg.device, props)

    def _precision(self, compiled: Any) -> str:
        try:
            return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        except (RuntimeError, AttributeError):
            return self.cfg.precision

    def set_baseline(self, onnx_bytes: bytes) -> None:
        """Compile the baseline once; every benchmark interleaves against it."""
        self._input = None
        model = self._read(onnx_bytes)
        self._baseline = self._compile(model)
        shape = tuple(self._baseline.input(0).shape)
        self._input = np.random.default_rng(self.cfg.seed).standard_normal(shape).astype(np.float32)
        self.baseline_layers = tuple(
            profile_layers(self._compile(model, profile=True), {0: self._input}, self.cfg.profile_inferences)
        )
        self._latency_cache.clear()

    def set_eval_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """The validation images (N, C, H, W) float32 and labels (N,) for ``evaluate``."""
        self._eval = (np.ascontiguousarray(x, dtype=np.float32), np.asarray(y))

    def benchmark(self, onnx_bytes: bytes) -> LatencyResult:
        """Interleave the candidate against the baseline; identical architectures are measured once."""
        if self._baseline is None or self._input is None:
            raise RuntimeError("set_baseline() must be called before benchmark()")
        start = time.perf_counter()
        model = self._read(onnx_bytes)  # first: a corrupt file fails here, clearly
        key = structure_hash(onnx_bytes)
        if self.cfg.cache and key in self._latency_cache:
            self.stats["cache_hits"] += 1
            return replace(self._latency_cache[key], cached=True)
        compiled = self._compile(model)
        compile_s = time.perf_counter() - start
        import openvino as ov

        a, b = compiled.create_infer_request(), self._baseline.create_infer_request()
        feed = {0: self._input}
        for req in (a, b):
            # Bound once: passing the input to every infer() call adds ~30 us of
            # Python-side copying per inference, a tenth of a small model's latency.
            req.set_input_tensor(ov.Tensor(self._input))
        s = interleave(a.infer, b.infer, self.cfg.timing)
        lo, hi = s.speedup_ci()
        p50 = float(np.percentile(s.a_ms, 50))
        result = LatencyResult(
            latency_ms_p50=p50,
            latency_ms_p90=float(np.percentile(s.a_ms, 90)),
            throughput_fps=1000.0 / p50,
            baseline_latency_ms_p50=float(np.percentile(s.b_ms, 50)),
            speedup=s.speedup,
            speedup_ci_low=lo,
            speedup_ci_high=hi,
            speedup_cv=cv(s.ratios),
            latency_cv=cv(s.a_round_medians),
            rounds=s.rounds,
            converged=s.converged,
            device=self.cfg.device,
            precision=self._precision(compiled),
            threads=self.cfg.threads,
            compile_s=compile_s,
            first_inference_ms=s.first_a_ms,
            ov_macs=openvino_macs(model),
            layers=tuple(profile_layers(self._compile(model, profile=True), feed, self.cfg.profile_inferences)),
        )
        self._latency_cache[key] = result
        self.stats["benchmarks"] += 1
        self.stats["busy_s"] += time.perf_counter() - start
        return result

    def evaluate(self, onnx_bytes: bytes) -> DeviceAccuracy:
        """Top-1/top-5 of the compiled model on the validation images, one image at a time."""
        if self._eval is None:
            raise RuntimeError("set_eval_data() must be called before evaluate()")
        key = content_hash(onnx_bytes)
        if key in self._accuracy_cache:
            self.stats["cache_hits"] += 1
            return self._accuracy_cache[key]
        start = time.perf_counter()
        req = self._compile(self._read(onnx_bytes)).create_infer_request()
        x, y = self._eval
        top1 = top5 = 0
        for i in range(len(x)):
            logits = req.infer({0: x[i : i + 1]})[0][0]  # (classes,)
            ranked = np.argsort(-logits)[:5]
            top1 += int(ranked[0] == y[i])
            top5 += int(y[i] in ranked)
        acc = DeviceAccuracy(100.0 * top1 / len(x), 100.0 * top5 / len(x), len(x))
        self._accuracy_cache[key] = acc
        self.stats["evaluations"] += 1
        self.stats["busy_s"] += time.perf_counter() - start
        return acc
