"""The ``EdgeDevice`` Ray actor: one per physical device, found by name from any node.

It owns one unit of a custom resource (``edge_device`` by default), so Ray
places it on the host the device is plugged into, and reserves the CPUs its
runtime uses. Device jobs (benchmark, evaluate) run one at a time under a
lock; the actor itself takes several calls at once so that ``info`` and the
queue length answer while a job runs. If its process dies, Ray restarts it
(the constructor rebuilds the baseline) and retries the pending calls; when
the runtime runs in another interpreter (``--device-python``) and that one
dies or hangs, the actor exits on purpose to get the same treatment.

Metrics, exported through Ray's metrics endpoint and shown by the dashboard
(Prometheus names get Ray's ``ray_`` prefix):

- ``edge_tune_device_queue_length``: jobs waiting for the device
- ``edge_tune_device_job_seconds``: seconds per job, by kind
- ``edge_tune_device_busy_fraction``: busy time over lifetime
- ``edge_tune_device_cache_hits``: jobs answered from the cache
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from edge_tune.device.profile import LayerTiming
from edge_tune.device.remote import EngineDied
from edge_tune.device.runner import (
    DeviceAccuracy,
    DeviceConfig,
    DeviceRunner,
    EvalChunk,
    EvalData,
    LatencyResult,
    as_chunks,
)
from edge_tune.errors import UserError

__all__ = ["ACTOR_NAME", "NAMESPACE", "EdgeDevice", "get_device", "start_device"]

ACTOR_NAME = "edge_device"
NAMESPACE = "edge_tune"
T = TypeVar("T")
_KEEP_ALIVE: dict[str, Any] = {}  # constructor arguments of live actors, by name


class _Metrics:
    def __init__(self, device: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("device",)
        self.queue = Gauge("edge_tune_device_queue_length", "Jobs waiting for the device", tag_keys=tags)
        self.seconds = Histogram(
            "edge_tune_device_job_seconds",
            "Seconds per device job",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=(*tags, "kind"),
        )
        self.busy = Gauge("edge_tune_device_busy_fraction", "Busy time over lifetime", tag_keys=tags)
        self.hits = Counter("edge_tune_device_cache_hits", "Jobs answered from the cache", tag_keys=tags)
        for m in (self.queue, self.seconds, self.busy, self.hits):
            m.set_default_tags({"device": device})


class EdgeDevice:
    """The actor's class; ``start_device`` creates it with the right options."""

    def __init__(self, cfg: DeviceConfig, baseline_onnx: bytes, eval_refs: list[Any] | None) -> None:
        self._runner = DeviceRunner(cfg, baseline_onnx, None if eval_refs is None else _Stored(eval_refs))
        self._lock = threading.Lock()  # one device job at a time
        self._count = threading.Lock()
        self._waiting = 0
        self._current: tuple[str, float] | None = None  # (kind, since): the job the device runs now
        self._metrics = _Metrics(cfg.device)
        self._metrics.queue.set(0)
        self._metrics.busy.set(0.0)

    def _job(self, kind: str, fn: Callable[[bytes], T], onnx_bytes: bytes) -> T:
        with self._count:
            self._waiting += 1
            self._metrics.queue.set(self._waiting)
        with self._lock:
            hits = self._runner.stats["cache_hits"]
            start = time.perf_counter()
            with self._count:  # leaving the queue and taking the device are one step for info()
                self._waiting -= 1
                self._current = (kind, start)
                self._metrics.queue.set(self._waiting)
            try:
                result = fn(onnx_bytes)
            except EngineDied as exc:
                # The runtime's interpreter died or hung: so does this actor, and
                # Ray restarts it (with a fresh server) and retries the request.
                print(f"edge_tune: {exc}; restarting the device actor", file=sys.stderr, flush=True)
                os._exit(1)
            finally:
                with self._count:
                    self._current = None
            self._metrics.seconds.observe(time.perf_counter() - start, tags={"kind": kind})
            if self._runner.stats["cache_hits"] > hits:
                self._metrics.hits.inc()
            self._metrics.busy.set(self._runner.info()["busy_fraction"])
            return result

    def benchmark(self, onnx_bytes: bytes, profile: bool = True) -> LatencyResult:
        return self._job("benchmark", lambda blob: self._runner.benchmark(blob, profile=profile), onnx_bytes)

    def evaluate(self, onnx_bytes: bytes) -> DeviceAccuracy:
        return self._job("evaluate", self._runner.evaluate, onnx_bytes)

    def baseline_layers(self) -> tuple[LayerTiming, ...]:
        return self._runner.baseline_layers

    def info(self) -> dict[str, Any]:
        """The runner's counters, the queue, and the job running now with its seconds so far."""
        with self._count:
            current, waiting = self._current, self._waiting
        job = {"job": current[0], "job_seconds": time.perf_counter() - current[1]} if current else {"job": None}
        return {**self._runner.info(), "queue_length": waiting, "pid": os.getpid(), **job}


class _Stored:
    """The validation set's chunks in Ray's object store, fetched one at a time on each pass."""

    def __init__(self, refs: list[Any]) -> None:
        self.refs = refs

    def __iter__(self) -> Iterator[EvalChunk]:
        import ray

        for ref in self.refs:
            yield ray.get(ref)


def start_device(
    cfg: DeviceConfig, baseline_onnx: bytes, eval_data: EvalData | None, start_timeout_s: float = 120.0
) -> Any:
    """Create the named ``EdgeDevice`` actor.

    Raises ``UserError`` when no node advertises ``cfg.resource``, when the
    device is missing on the node that does, or when the resource stays taken
    (another experiment holds the device) for ``start_timeout_s`` seconds.
    """
    import ray
    from ray.exceptions import RayActorError

    if ray.cluster_resources().get(cfg.resource, 0) < 1:
        raise UserError(
            f"no node of this Ray cluster advertises the resource {cfg.resource!r}: start the edge host's Ray "
            f"with --resources='{{\"{cfg.resource}\": 1}}' (cluster.yaml does), or run without --address"
        )

    # Ray restarts a dead actor by re-running its constructor with the same
    # arguments. Arguments passed by value live in the object store only while
    # something references them, so the driver puts them itself and keeps the
    # references for as long as it runs; otherwise a restart finds them gone.
    # The validation set goes in chunk by chunk (the driver never holds it
    # whole when it is read from files); the actor fetches them as it goes.
    chunks = None if eval_data is None else [ray.put(chunk) for chunk in as_chunks(eval_data)]
    args = (ray.put(baseline_onnx), chunks)
    _KEEP_ALIVE[cfg.actor_name] = args
    actor: Any = (
        ray.remote(EdgeDevice)
        .options(
            name=cfg.actor_name,
            namespace=NAMESPACE,
            num_cpus=cfg.threads,
            resources={cfg.resource: 1},
            max_concurrency=8,
            max_restarts=-1,
            max_task_retries=3,
        )
        .remote(cfg, *args)
    )
    try:
        ready, _ = ray.wait([info := actor.info.remote()], timeout=start_timeout_s)
        if not ready:
            _discard(actor, cfg.actor_name)
            raise UserError(
                f"the device actor could not start within {start_timeout_s:.0f} s: the resource {cfg.resource!r} "
                f"is taken (is another experiment using the device?) or its node lacks {cfg.threads} free CPU(s)"
            )
        ray.get(info)
    except RayActorError as exc:
        text = str(exc.__cause__ or exc)
        if "UserError" in text or "no such device" in text:
            _discard(actor, cfg.actor_name)
            raise UserError(text.split("UserError: ")[-1].strip().splitlines()[0]) from None
        raise
    return actor


def _discard(actor: Any, name: str) -> None:
    """Kill an actor that never came up, and let go of its constructor arguments."""
    import ray

    ray.kill(actor)
    _KEEP_ALIVE.pop(name, None)


def get_device(name: str = ACTOR_NAME) -> Any:
    """The running ``EdgeDevice`` actor called ``name``, from any node of the cluster."""
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)
