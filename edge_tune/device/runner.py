"""``DeviceRunner``: compiles ONNX models on one OpenVINO device and measures them.

Plain Python, so it is tested without Ray; ``device.actor`` serves it as the
shared ``EdgeDevice`` actor. Every method is one device job: callers
serialise them (the actor holds a lock). The runtime itself sits behind an
``Engine``: OpenVINO in this process, or in another interpreter
(``DeviceConfig.python``, the CLI's ``--device-python``) through
``device.remote``. Hashing, caching and statistics stay here, so every engine
gets them alike.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np

from edge_tune.device.engine import Engine, ModelError, open_engine, unpack_ir
from edge_tune.device.profile import LayerTiming
from edge_tune.device.remote import RemoteEngine
from edge_tune.device.timing import ABSamples, TimingPlan, cv
from edge_tune.errors import UserError
from edge_tune.export import content_hash, structure_hash

__all__ = [
    "DeviceAccuracy",
    "DeviceConfig",
    "DeviceRunner",
    "EvalData",
    "LatencyResult",
    "ModelError",
    "as_chunks",
    "check_device_name",
    "chunked",
]

EVAL_CHUNK = 256  # validation images sent to the device at a time
EvalChunk: TypeAlias = tuple[np.ndarray, np.ndarray]  # images (B, C, H, W) float32, normalised; labels (B,)
# The validation set: any re-iterable of chunks (a list, chunks read from files or from Ray's object
# store on each pass), or one pair of arrays (images, labels), which is cut into chunks.
EvalData: TypeAlias = Iterable[EvalChunk] | tuple[np.ndarray, np.ndarray]


def chunked(x: np.ndarray, y: np.ndarray, size: int = EVAL_CHUNK) -> list[EvalChunk]:
    """Images (N, C, H, W) and labels (N,) as chunks of ``size``."""
    return [(x[i : i + size], np.asarray(y[i : i + size])) for i in range(0, len(x), size)]


def as_chunks(data: EvalData) -> Iterable[EvalChunk]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        return chunked(data[0], np.asarray(data[1]))
    return data  # type: ignore[return-value]


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "CPU"  # any OpenVINO device name: CPU, GPU, NPU, AUTO:...
    precision: str = "f32"  # INFERENCE_PRECISION_HINT: f32 | f16 | bf16
    threads: int = 1  # INFERENCE_NUM_THREADS on CPU; also the CPUs the actor reserves
    resource: str = "edge_device"  # custom Ray resource the actor owns
    actor_name: str = "edge_device"  # the actor's name in Ray: one per physical device
    count: int = 1  # --devices: devices of this kind, one actor each, behind one pool of this name (device.actor)
    timing: TimingPlan = field(default_factory=TimingPlan)  # warm-up, rounds, stopping rule
    profile_repeats: int = 5  # fresh compiles profiled, candidate and baseline alike (device.profile)
    profile_inferences: int = 40  # profiled inferences of each model per repeat, candidate and baseline alternating
    profile_warmup: int = 10  # inferences of each before them, not counted
    profile_time_cap_s: float = 5.0  # a slow model's profile stops here (5 inferences a repeat at least)
    cache: bool = True  # measure an architecture once; off for repeatability benchmarks
    seed: int = 0  # the timed input tensor
    python: str = ""  # interpreter hosting the runtime (--device-python); "" = this process
    server_timeout_s: float = 300.0  # deadline of one request to that interpreter


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
    compile_s: float  # compile of the candidate on the device
    first_inference_ms: float  # the candidate's first (cold) inference
    ov_macs: int  # conv + fully-connected MACs counted on OpenVINO's graph (O0)
    ov_conv_shapes: tuple[tuple[int, ...], ...]  # OpenVINO's convolutions, (out, in/groups, kh, kw), sorted (O0)
    layers: tuple[LayerTiming, ...] = ()  # per-layer profile of the candidate (O4)
    baseline_layers: tuple[LayerTiming, ...] = ()  # the baseline's, profiled interleaved with the candidate's
    profiled_ms: float = float("nan")  # end to end, the profiled inferences the layers' times split (as they are:
    baseline_profiled_ms: float = float("nan")  # the median over repeats of each one's mean)
    layers_share: float = float("nan")  # of a profiled inference, the part its layers' counters account for
    baseline_layers_share: float = float("nan")
    cached: bool = False  # an identical architecture was measured before


@dataclass(frozen=True)
class DeviceAccuracy:
    top1: float  # percent, compiled model on the device
    top5: float
    images: int


def cache_serves(hit: LatencyResult, profile: bool) -> bool:
    """Whether a cached measurement answers a request: one without a profile answers only a request for none."""
    return bool(hit.layers) or not profile


def model_structure(blob: bytes) -> str:
    """The latency cache's key: the ONNX graph's structure, or an IR's XML (its weights live in the bin)."""
    ir = unpack_ir(blob)
    return structure_hash(blob) if ir is None else "ir-" + hashlib.sha256(ir[0]).hexdigest()[:16]


def model_content(blob: bytes) -> str:
    """The accuracy cache's key: structure and weights."""
    return content_hash(blob)


def _layers(rows: list[dict[str, Any]]) -> tuple[LayerTiming, ...]:
    return tuple(LayerTiming(**{**r, "fused": tuple(r["fused"])}) for r in rows)


def check_device_name(device: str, available: list[str], runtime: str, flag: str = "--device") -> None:
    """``--device`` names a device the runtime has here (``GPU.1`` by its family too; AUTO/MULTI/HETERO pass;
    ``ort:CPU``: an ONNX Runtime execution provider)."""
    family = device.split(":")[0].split(".")[0]
    if family not in ("AUTO", "MULTI", "HETERO") and device not in available and family not in available:
        what = runtime if runtime.startswith("ONNX Runtime") else f"OpenVINO {runtime}"
        raise UserError(f"{flag} {device}: {what} has no such device here; available: {', '.join(available)}")


class DeviceRunner:
    """One OpenVINO device: benchmark against the baseline, evaluate, profile."""

    def __init__(
        self,
        cfg: DeviceConfig,
        baseline_onnx: bytes | None = None,
        eval_data: EvalData | None = None,
    ) -> None:
        # Baseline and validation data come in through the constructor so that
        # an actor Ray restarts after a crash is whole again before it serves.
        self.cfg = cfg
        self.engine: Engine | RemoteEngine = (
            RemoteEngine(cfg.python, cfg.device, cfg.precision, cfg.threads, cfg.server_timeout_s)
            if cfg.python
            else open_engine(cfg.device, cfg.precision, cfg.threads)
        )
        self.description = self.engine.describe()
        check_device_name(cfg.device, self.description["devices"], self.description["runtime"])
        self._input: np.ndarray | None = None  # (1, C, H, W) float32, the timed input
        self._eval: Iterable[EvalChunk] | None = None  # the validation set, passed over by each evaluate
        self._latency_cache: dict[str, LatencyResult] = {}
        self._accuracy_cache: dict[str, DeviceAccuracy] = {}
        self.baseline_layers: tuple[LayerTiming, ...] = ()
        self.stats: dict[str, float] = {"benchmarks": 0, "evaluations": 0, "cache_hits": 0, "busy_s": 0.0}
        self.started = time.time()
        if baseline_onnx is not None:
            self.set_baseline(baseline_onnx)
        if eval_data is not None:
            self.set_eval_data(eval_data)

    def info(self) -> dict[str, Any]:
        up = max(time.time() - self.started, 1e-9)
        d = self.description
        return {
            "device": self.cfg.device,
            "name": d["device_name"],
            "available": d["devices"],
            "runtime": d["runtime"],
            "api": d["api"],
            "python": d["python"],
            "server_pid": self.engine.pid if isinstance(self.engine, RemoteEngine) else None,
            "precision": self.cfg.precision,
            "threads": self.cfg.threads,
            **self.stats,
            "busy_fraction": self.stats["busy_s"] / up,
        }

    def _load(self, onnx_bytes: bytes) -> dict[str, Any]:
        """Read the model on the device and check its input against the baseline's."""
        model = self.engine.load(onnx_bytes)
        shape = tuple(model["input_shape"]) if model["input_shape"] is not None else None
        if self._input is not None and shape != self._input.shape:
            self.engine.release(model["handle"])
            raise ModelError(f"model input shape {shape} differs from the baseline's {self._input.shape}")
        return model

    def set_baseline(self, onnx_bytes: bytes) -> None:
        """Compile the baseline once; every benchmark interleaves against it."""
        self._input = None
        model = self._load(onnx_bytes)
        if model["input_shape"] is None:
            raise ModelError("the baseline's input shape is not static")
        rng = np.random.default_rng(self.cfg.seed)
        self._input = rng.standard_normal(model["input_shape"]).astype(np.float32)
        rows = self.engine.set_baseline(model["handle"], self._input, self._profile_plan())
        self.baseline_layers = _layers(rows)
        self._latency_cache.clear()

    def _profile_plan(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "repeats": c.profile_repeats,
            "inferences": c.profile_inferences,
            "warmup": c.profile_warmup,
            "time_cap_s": c.profile_time_cap_s,
        }

    def set_eval_data(self, data: EvalData) -> None:
        """The validation set for ``evaluate``: chunks of images (B, C, H, W) float32 and labels (B,), or one
        pair of arrays. Chunks are passed over on each evaluation, never gathered: a set read from files or
        from Ray's object store stays out of this process's memory."""
        self._eval = as_chunks(data)
        self._accuracy_cache.clear()

    def benchmark(self, onnx_bytes: bytes, profile: bool = True) -> LatencyResult:
        """Interleave the candidate against the baseline; identical architectures are measured once.

        ``profile``: profile both per layer too (``device.profile``, a few seconds); without it
        ``layers`` is empty, and a later call asking for it measures again."""
        if self._input is None:
            raise RuntimeError("set_baseline() must be called before benchmark()")
        start = time.perf_counter()
        model = self._load(onnx_bytes)  # first: a corrupt file fails here, clearly
        try:
            key = model_structure(onnx_bytes)
            hit = self._latency_cache.get(key) if self.cfg.cache else None
            if hit is not None and cache_serves(hit, profile):
                self.stats["cache_hits"] += 1
                return replace(hit, cached=True)
            m = self.engine.measure(model["handle"], asdict(self.cfg.timing), self._profile_plan() if profile else None)
        finally:
            self.engine.release(model["handle"])
        s = ABSamples(**{k: m[k] for k in ABSamples.__dataclass_fields__})
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
            precision=m["precision"],
            threads=self.cfg.threads,
            compile_s=m["compile_s"],
            first_inference_ms=s.first_a_ms,
            ov_macs=model["macs"],
            ov_conv_shapes=tuple(tuple(c) for c in model["conv_shapes"]),
            layers=_layers(m.get("layers", [])),
            baseline_layers=_layers(m.get("baseline_layers", [])),
            profiled_ms=m.get("profiled_ms", math.nan),
            baseline_profiled_ms=m.get("baseline_profiled_ms", math.nan),
            layers_share=m.get("layers_share", math.nan),
            baseline_layers_share=m.get("baseline_layers_share", math.nan),
        )
        self._latency_cache[key] = result
        self.stats["benchmarks"] += 1
        self.stats["busy_s"] += time.perf_counter() - start
        return result

    def evaluate(self, onnx_bytes: bytes) -> DeviceAccuracy:
        """Top-1/top-5 of the compiled model on the validation images, one image at a time."""
        if self._eval is None:
            raise RuntimeError("set_eval_data() must be called before evaluate()")
        key = model_content(onnx_bytes)
        if key in self._accuracy_cache:
            self.stats["cache_hits"] += 1
            return self._accuracy_cache[key]
        start = time.perf_counter()
        model = self._load(onnx_bytes)
        shape = model["input_shape"]
        correct1 = correct5 = images = 0
        try:
            for x, y in self._eval:  # the images' shape is checked where they are used, not read ahead for it
                if shape is not None and tuple(x.shape[1:]) != tuple(shape[1:]):
                    raise ModelError(
                        f"model input shape {tuple(shape)} does not fit the dataset's images {tuple(x.shape[1:])}"
                    )
                logits = self.engine.predict(model["handle"], x)  # (B, classes)
                top5 = np.argsort(-logits, axis=1)[:, :5]
                correct1 += int(np.sum(top5[:, 0] == y))
                correct5 += int(np.sum((top5 == np.asarray(y)[:, None]).any(1)))
                images += len(y)
        finally:
            self.engine.release(model["handle"])
        acc = DeviceAccuracy(100.0 * correct1 / max(images, 1), 100.0 * correct5 / max(images, 1), images)
        self._accuracy_cache[key] = acc
        self.stats["evaluations"] += 1
        self.stats["busy_s"] += time.perf_counter() - start
        return acc

    def close(self) -> None:
        """Stop the device server, if the runtime runs in one."""
        if isinstance(self.engine, RemoteEngine):
            self.engine.close()
