"""The edge device: one Ray actor per physical device, serialising every measurement.

``DeviceRunner`` is the plain-Python core (testable without Ray); ``start_device``
wraps it in a named Ray actor that owns the custom resource ``edge_device`` so
it lands on the host the device is plugged into and runs one request at a time.

Latency is never a single number: after warm-up, the candidate (A) and the
baseline (B) alternate inference by inference (A B A B ...) for ``rounds``
rounds; each round yields median(B) / median(A), and the speed-up is the median
of those ratios, reported with their coefficient of variation.

>>> runner = DeviceRunner(DeviceConfig(device="CPU", threads=1))
>>> runner.set_baseline(baseline_onnx)          # doctest: +SKIP
>>> runner.benchmark(candidate_onnx).speedup     # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from edge_tune.errors import UserError
from edge_tune.export import content_hash, structure_hash

__all__ = ["DeviceAccuracy", "DeviceConfig", "DeviceRunner", "LatencyResult", "get_device", "start_device"]

ACTOR_NAME = "edge_device"
NAMESPACE = "edge_tune"


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "CPU"  # any OpenVINO device name: CPU, GPU, NPU, AUTO:...
    precision: str = "f32"  # INFERENCE_PRECISION_HINT: f32 | f16 | bf16
    threads: int = 1  # INFERENCE_NUM_THREADS on CPU; also the CPUs the actor reserves
    warmup: int = 20  # untimed inferences per model before each measurement
    rounds: int = 20  # A/B rounds; one speed-up ratio per round
    iters_per_round: int = 25  # inferences of each model per round
    resource: str = "edge_device"  # custom Ray resource the actor owns
    seed: int = 0  # the timed input tensor


@dataclass(frozen=True)
class LatencyResult:
    latency_ms_p50: float  # candidate, batch 1, median over all timed inferences
    latency_ms_p90: float
    baseline_latency_ms_p50: float  # measured in the same rounds
    speedup: float  # median over rounds of baseline / candidate latency
    speedup_cv: float  # coefficient of variation of the per-round ratios
    latency_cv: float  # coefficient of variation of the candidate's per-round medians
    rounds: int
    device: str
    precision: str  # the precision the compiled model reports it runs in
    threads: int
    compile_s: float  # seconds to compile the candidate
    cached: bool = False  # True when an identical architecture was measured before


@dataclass(frozen=True)
class DeviceAccuracy:
    top1: float  # percent, compiled model on the device
    top5: float
    images: int


class DeviceRunner:
    """Compiles ONNX models on one OpenVINO device and measures them."""

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
        available = self.core.available_devices
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
        self.stats = {"benchmarks": 0, "evaluations": 0, "cache_hits": 0, "busy_s": 0.0}
        if baseline_onnx is not None:
            self.set_baseline(baseline_onnx)
        if eval_data is not None:
            self.set_eval_data(*eval_data)

    def info(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "available": list(self.core.available_devices),
            "name": self.core.get_property(self.cfg.device.split(":")[0], "FULL_DEVICE_NAME")
            if self.cfg.device in self.core.available_devices
            else self.cfg.device,
            **self.stats,
        }

    def _compile(self, onnx_bytes: bytes) -> tuple[Any, float]:
        start = time.perf_counter()
        model = self.core.read_model(onnx_bytes)
        props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.cfg.precision}
        if self.cfg.device == "CPU":
            props |= {"INFERENCE_NUM_THREADS": self.cfg.threads, "NUM_STREAMS": 1}
        compiled = self.core.compile_model(model, self.cfg.device, props)
        return compiled, time.perf_counter() - start

    def _precision(self, compiled: Any) -> str:
        """The precision the compiled model runs in, as OpenVINO reports it (f32, bf16, ...)."""
        try:
            return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        except (RuntimeError, AttributeError):
            return self.cfg.precision

    def set_baseline(self, onnx_bytes: bytes) -> None:
        """Compile the baseline once; every benchmark interleaves against it."""
        self._baseline, _ = self._compile(onnx_bytes)
        shape = tuple(self._baseline.input(0).shape)
        self._input = np.random.default_rng(self.cfg.seed).standard_normal(shape).astype(np.float32)
        self._latency_cache.clear()

    def set_eval_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """The validation images (N, C, H, W) float32 and labels (N,) for ``evaluate``."""
        self._eval = (np.ascontiguousarray(x, dtype=np.float32), np.asarray(y))

    def benchmark(self, onnx_bytes: bytes) -> LatencyResult:
        if self._baseline is None or self._input is None:
            raise RuntimeError("set_baseline() must be called before benchmark()")
        key = structure_hash(onnx_bytes)
        if key in self._latency_cache:
            self.stats["cache_hits"] += 1
            return replace(self._latency_cache[key], cached=True)
        start = time.perf_counter()
        compiled, compile_s = self._compile(onnx_bytes)
        result = self._interleave(compiled, compile_s)
        self._latency_cache[key] = result
        self.stats["benchmarks"] += 1
        self.stats["busy_s"] += time.perf_counter() - start
        return result

    def _interleave(self, compiled: Any, compile_s: float) -> LatencyResult:
        a, b = compiled.create_infer_request(), self._baseline.create_infer_request()
        feed = {0: self._input}
        for _ in range(self.cfg.warmup):
            a.infer(feed)
            b.infer(feed)
        all_a: list[float] = []
        ratios, medians_a, medians_b = [], [], []
        for r in range(self.cfg.rounds):
            ta: list[float] = []
            tb: list[float] = []
            # Alternate which model goes first so neither always follows the other.
            order = (a, b) if r % 2 == 0 else (b, a)
            for _ in range(self.cfg.iters_per_round):
                for req in order:
                    t0 = time.perf_counter_ns()
                    req.infer(feed)
                    (ta if req is a else tb).append((time.perf_counter_ns() - t0) / 1e6)
            ma, mb = statistics.median(ta), statistics.median(tb)
            medians_a.append(ma)
            medians_b.append(mb)
            ratios.append(mb / ma)
            all_a += ta
        return LatencyResult(
            latency_ms_p50=float(np.percentile(all_a, 50)),
            latency_ms_p90=float(np.percentile(all_a, 90)),
            baseline_latency_ms_p50=statistics.median(medians_b),
            speedup=statistics.median(ratios),
            speedup_cv=_cv(ratios),
            latency_cv=_cv(medians_a),
            rounds=self.cfg.rounds,
            device=self.cfg.device,
            precision=self._precision(compiled),
            threads=self.cfg.threads,
            compile_s=compile_s,
        )

    def evaluate(self, onnx_bytes: bytes) -> DeviceAccuracy:
        """Top-1/top-5 of the compiled model on the validation images, one image at a time."""
        if self._eval is None:
            raise RuntimeError("set_eval_data() must be called before evaluate()")
        key = content_hash(onnx_bytes)
        if key in self._accuracy_cache:
            self.stats["cache_hits"] += 1
            return self._accuracy_cache[key]
        start = time.perf_counter()
        compiled, _ = self._compile(onnx_bytes)
        req = compiled.create_infer_request()
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


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if len(values) > 1 and mean else 0.0


def start_device(cfg: DeviceConfig, baseline_onnx: bytes, eval_data: tuple[np.ndarray, np.ndarray]) -> Any:
    """Create the named ``EdgeDevice`` actor; raises ``UserError`` if the device is missing.

    The actor reserves ``cfg.threads`` CPUs and one unit of ``cfg.resource``,
    runs one request at a time (Ray's default for a synchronous actor), and is
    restarted by Ray if its process dies; pending calls are retried.
    """
    import ray
    from ray.exceptions import RayActorError

    actor_cls = ray.remote(DeviceRunner)
    actor: Any = actor_cls.options(  # type: ignore[attr-defined]
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        get_if_exists=False,
        num_cpus=cfg.threads,
        resources={cfg.resource: 1},
        max_restarts=-1,
        max_task_retries=3,
    ).remote(cfg, baseline_onnx, eval_data)
    try:
        ray.get(actor.info.remote())
    except RayActorError as exc:
        cause = exc.__cause__ or exc
        text = str(cause)
        if "UserError" in text or "no such device" in text:
            raise UserError(text.split("UserError: ")[-1].strip().splitlines()[0]) from None
        raise
    return actor


def get_device() -> Any:
    """The running ``EdgeDevice`` actor, from any node of the cluster."""
    import ray

    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
