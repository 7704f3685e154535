"""The ``EdgeDevice`` Ray actor: one per physical device, found by name from any node.

It owns one unit of a custom resource (``edge_device`` by default), so Ray
places it on the host the device is plugged into, and reserves the CPUs its
runtime uses. Device jobs (benchmark, evaluate) run one at a time under a
lock; the actor itself takes several calls at once so that ``info`` and the
queue length answer while a job runs. If its process dies, Ray restarts it
(the constructor rebuilds the baseline) and retries the pending calls; when
the runtime runs in another interpreter (``--device-python``) and that one
dies or hangs, the actor exits on purpose to get the same treatment.

A pool (``--devices N``, ``DeviceConfig.count``): N such actors, one per
physical device of one kind (``edge_device/0``, ``edge_device/1``, ...), each
holding one unit of the resource and measuring every candidate against its
own baseline, so a speed-up is never a ratio across devices. In front of
them a ``DevicePool`` actor takes the name trials already call
(``edge_device``) and the same methods: each job goes to whichever member is
free. The latency cache is shared there, by structure (the members are one
kind). A member that Ray cannot bring back (``RayActorError``: killed for
good, its node gone) leaves the pool, its job goes to another, and it comes
back when it answers again; a member Ray is restarting keeps its jobs, which
Ray retries on it as for a single device.

Metrics, exported through Ray's metrics endpoint and shown by the dashboard
(Prometheus names get Ray's ``ray_`` prefix), tagged with the device kind and
the member's actor name:

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

__all__ = ["ACTOR_NAME", "NAMESPACE", "DevicePool", "EdgeDevice", "get_device", "member_name", "start_device"]

ACTOR_NAME = "edge_device"
NAMESPACE = "edge_tune"
T = TypeVar("T")
_KEEP_ALIVE: dict[str, Any] = {}  # constructor arguments of live actors, by name
_MEMBERS: dict[str, Any] = {}  # handles of a pool's devices: Ray ends an actor whose every handle is gone


class _Metrics:
    def __init__(self, device: str, actor: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("device", "actor")
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
            m.set_default_tags({"device": device, "actor": actor})


class EdgeDevice:
    """The actor's class; ``start_device`` creates it with the right options."""

    def __init__(self, cfg: DeviceConfig, baseline_onnx: bytes, eval_refs: list[Any] | None) -> None:
        self._runner = DeviceRunner(cfg, baseline_onnx, None if eval_refs is None else _Stored(eval_refs))
        self._lock = threading.Lock()  # one device job at a time
        self._count = threading.Lock()
        self._waiting = 0
        self._current: tuple[str, float] | None = None  # (kind, since): the job the device runs now
        self._metrics = _Metrics(cfg.device, cfg.actor_name)
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


def member_name(pool: str, k: int) -> str:
    """The actor name of a pool's k-th device."""
    return f"{pool}/{k}"


class DevicePool:
    """``--devices N``: the interface of one ``EdgeDevice``, served by whichever of N member devices is free.

    An async actor: each call waits for a free member, runs the job there, and hands the member back. A
    member lost for good (``RayActorError``) leaves the pool and the job goes to the next; a background
    task waits for it to answer again and hands it back.
    """

    def __init__(self, members: list[str]) -> None:
        self._members = list(members)
        self._handles: dict[str, Any] = {}
        self._free: Any = None  # asyncio.Queue of member names, made in the actor's event loop
        self._cache: dict[str, LatencyResult] = {}  # by structure: the members are one kind
        self._jobs = dict.fromkeys(self._members, 0)  # jobs each member served
        self._running: dict[str, tuple[str, float]] = {}  # member -> (kind, since)
        self._down: set[str] = set()
        self._waiting = 0
        self._hits = 0

    def _queue(self) -> Any:
        import asyncio

        if self._free is None:
            self._free = asyncio.Queue()
            for name in self._members:
                self._free.put_nowait(name)
        return self._free

    def _handle(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = get_device(name)
        return self._handles[name]

    async def _run(self, kind: str, method: str, *args: Any) -> Any:
        import asyncio

        from ray.exceptions import RayActorError

        queue = self._queue()
        while True:
            if len(self._down) == len(self._members):
                raise RuntimeError(f"every device of the pool is gone: {', '.join(sorted(self._down))}")
            self._waiting += 1
            try:
                name = await queue.get()
            finally:
                self._waiting -= 1
            self._running[name] = (kind, time.perf_counter())
            try:
                result = await getattr(self._handle(name), method).remote(*args)
            except RayActorError as exc:
                self._down.add(name)
                print(f"edge_tune: device {name} left the pool ({type(exc).__name__})", file=sys.stderr, flush=True)
                asyncio.get_running_loop().create_task(self._readmit(name))
                continue
            finally:
                self._running.pop(name, None)
            self._jobs[name] += 1
            queue.put_nowait(name)
            return result

    async def _readmit(self, name: str) -> None:
        """Hand a member back once it answers again (Ray restarted it, or it was started anew)."""
        import asyncio

        from ray.exceptions import RayActorError

        while True:
            try:
                self._handles.pop(name, None)
                await self._handle(name).info.remote()
                break
            except (RayActorError, ValueError):  # ValueError: no actor of that name (yet)
                await asyncio.sleep(5.0)
        self._down.discard(name)
        self._queue().put_nowait(name)

    async def benchmark(self, onnx_bytes: bytes, profile: bool = True) -> LatencyResult:
        from dataclasses import replace

        from edge_tune.device.runner import cache_serves, model_structure

        key = model_structure(onnx_bytes)
        hit = self._cache.get(key)
        if hit is not None and cache_serves(hit, profile):
            self._hits += 1
            return replace(hit, cached=True)
        result: LatencyResult = await self._run("benchmark", "benchmark", onnx_bytes, profile)
        self._cache[key] = replace(result, cached=False)
        return result

    async def evaluate(self, onnx_bytes: bytes) -> DeviceAccuracy:
        result: DeviceAccuracy = await self._run("evaluate", "evaluate", onnx_bytes)
        return result

    async def baseline_layers(self) -> tuple[LayerTiming, ...]:
        layers: tuple[LayerTiming, ...] = await self._run("baseline layers", "baseline_layers")
        return layers

    async def info(self) -> dict[str, Any]:
        """The first member's description, and the pool's: members, their jobs, the queue, the job running longest."""
        import asyncio

        up = [m for m in self._members if m not in self._down]
        infos = await asyncio.gather(*(self._handle(m).info.remote() for m in up), return_exceptions=True)
        members = {m: i for m, i in zip(up, infos, strict=True) if isinstance(i, dict)}
        first = next(iter(members.values()), {})
        oldest = min(self._running.values(), key=lambda r: r[1], default=None)
        job = {"job": oldest[0], "job_seconds": time.perf_counter() - oldest[1]} if oldest else {"job": None}
        return {
            **first,
            "queue_length": self._waiting,
            "pid": os.getpid(),
            **job,
            "pool": {
                "members": self._members,
                "down": sorted(self._down),
                "jobs": dict(self._jobs),
                "cache_hits": self._hits,
                "busy_fraction": {m: i.get("busy_fraction") for m, i in members.items()},
            },
        }


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
    """Create the named ``EdgeDevice`` actor, or with ``cfg.count`` > 1 a pool of that name in front of
    ``cfg.count`` of them (``member_name``).

    Raises ``UserError`` when no node advertises ``cfg.resource`` (as many units as devices), when the
    device is missing on the node that does, or when the resource stays taken (another experiment holds
    the device) for ``start_timeout_s`` seconds.
    """
    import ray

    have = ray.cluster_resources().get(cfg.resource, 0)
    if have < cfg.count:
        if have < 1:
            raise UserError(
                f"no node of this Ray cluster advertises the resource {cfg.resource!r}: start the edge host's Ray "
                f"with --resources='{{\"{cfg.resource}\": 1}}' (cluster.yaml does), or run without --address"
            )
        raise UserError(
            f"--devices {cfg.count}: this Ray cluster advertises {have:g} unit(s) of {cfg.resource!r}, one per "
            "device; give each device's host that resource (one unit per device it drives), or lower --devices"
        )
    # The validation set goes in chunk by chunk (the driver never holds it whole when it is read from
    # files); every member fetches the same chunks as it goes.
    chunks = None if eval_data is None else [ray.put(chunk) for chunk in as_chunks(eval_data)]
    if cfg.count <= 1:
        return _start_one(cfg, baseline_onnx, chunks, start_timeout_s)
    from dataclasses import replace

    members = [member_name(cfg.actor_name, k) for k in range(cfg.count)]
    for name in members:  # each measures its own baseline before the pool serves
        _MEMBERS[name] = _start_one(replace(cfg, actor_name=name, count=1), baseline_onnx, chunks, start_timeout_s)
    pool: Any = (
        ray.remote(DevicePool)
        .options(name=cfg.actor_name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1000, max_restarts=-1)
        .remote(members)
    )
    ray.get(pool.info.remote())
    return pool


def _start_one(cfg: DeviceConfig, baseline_onnx: bytes, chunks: list[Any] | None, start_timeout_s: float) -> Any:
    import ray
    from ray.exceptions import RayActorError

    # Ray restarts a dead actor by re-running its constructor with the same
    # arguments. Arguments passed by value live in the object store only while
    # something references them, so the driver puts them itself and keeps the
    # references for as long as it runs; otherwise a restart finds them gone.
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
    _MEMBERS.pop(name, None)


def get_device(name: str = ACTOR_NAME) -> Any:
    """The running ``EdgeDevice`` actor called ``name``, from any node of the cluster."""
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)
