"""Starting or joining Ray, and what the cluster decides: where the device lives, GPUs per trial."""

from __future__ import annotations

import math
import os
from typing import Any

from edge_tune import signals
from edge_tune.config import ExperimentConfig
from edge_tune.errors import UserError
from edge_tune.progress import log

__all__ = ["check_address", "device_cpus", "loopback_only", "ray_address", "start_ray", "trial_gpus"]


def trial_gpus(flag: str, cluster: dict[str, float], joined: bool) -> float:
    """GPUs per trial from ``--gpus-per-trial``: auto is 1 when the cluster has a GPU now, else 0.

    A number asks for that many whatever the cluster has now: an autoscaling
    cluster (cluster.yaml) adds GPU workers when trials ask for GPUs. On the
    local cluster this run starts, asking for more than it has is an error.
    """
    if flag == "auto":
        return 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    try:
        gpus = float(flag)
    except ValueError:
        gpus = -1.0
    if not (gpus >= 0 and math.isfinite(gpus)):
        raise UserError(f"--gpus-per-trial {flag}: give auto or a number of GPUs (0, 0.5, 1, ...)")
    if gpus and not joined and cluster.get("GPU", 0) < gpus:
        raise UserError(
            f"--gpus-per-trial {flag}: the local Ray cluster has {cluster.get('GPU', 0):g} GPU(s); "
            "use --gpus-per-trial 0 (or auto), or join a cluster with GPUs with --address"
        )
    return gpus


def device_cpus(cfg: ExperimentConfig) -> int:
    """CPUs the device actors reserve: each device of the target kind, and each other kind's."""
    return cfg.device.threads * cfg.device.count + sum(d.threads * d.count for d in cfg.also_devices)


def ray_address(cfg: ExperimentConfig) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS, as under ``ray job submit``); None: start one."""
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str) -> None:
    """Refuse, before any training, a cluster address where nothing listens.

    ``host:port`` (the GCS, as ``ray start --head`` prints it) must accept a TCP
    connection within a few seconds; ``auto``, ``local`` and ``ray://`` (Ray
    Client) addresses are left to ``ray.init``. Whether the cluster lets this
    driver in (its auth token, its Ray version) is known only when joining.
    """
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    flag = "--address" if os.environ.get("RAY_ADDRESS") != address else "RAY_ADDRESS"
    if not (host and port.isdigit()):
        raise UserError(f"{flag} {address}: give the head node's host:port, as `ray start --head` prints it")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"{flag} {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head` (or `ray up cluster.yaml`), or leave the address out to run on this machine"
        ) from None


def loopback_only() -> None:
    """Make the local Ray cluster this run starts listen on 127.0.0.1 alone.

    Ray takes the node's address from its own lookup, which on Linux is the
    machine's outward address (``ray.init(_node_ip_address="127.0.0.1")`` is
    turned back into it), and its gRPC servers then bind every interface. With
    Ray's switch for single-machine clusters off (it is named for Windows and
    macOS, where it is the default), the lookup gives the loopback address, and
    the GCS, raylet, workers, dashboard agent and metrics export all bind
    127.0.0.1. The environment variable reaches the processes Ray starts; the
    constant is what this process, which may have imported Ray already, reads.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_ray(cfg: ExperimentConfig, name: str = "") -> Any:
    """Join the cluster at --address (or RAY_ADDRESS), or start a local one with the dashboard.

    The driver's Ray job carries the experiment's name in its metadata
    (``edge_tune_experiment``), which the dashboard's Jobs page shows.
    """
    import ray
    from ray.job_config import JobConfig

    address = ray_address(cfg)
    job = JobConfig(metadata={"edge_tune_experiment": name, "edge_tune_space": cfg.space.name})
    if address:
        try:
            ctx = ray.init(address=address, namespace="edge_tune", log_to_driver=False, job_config=job)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"--address {address}: cannot join the Ray cluster there ({why}); if it uses token "
                "authentication (Ray's default for a new cluster), its token must be in ~/.ray/auth_token or "
                "RAY_AUTH_TOKEN here too"
            ) from None
    else:
        loopback_only()
        cpus = max(os.cpu_count() or 1, device_cpus(cfg) + cfg.trial_cpus)
        # This machine is every device: one unit of each kind's resource per device (edge_tune.kinds).
        devices: dict[str, float] = {
            cfg.device.resource: cfg.device.count,
            **{d.resource: d.count for d in cfg.also_devices},
        }
        ctx = ray.init(
            num_cpus=cpus,
            resources=devices,
            namespace="edge_tune",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            job_config=job,
        )
    signals.install()  # ray.init replaced the SIGTERM handler with one that exits at once
    url = getattr(ctx, "dashboard_url", None)
    token = os.environ.get("RAY_AUTH_MODE") == "token"  # Ray's default for a new local cluster
    log(
        f"Ray {'joined at ' + address if address else 'started locally'}; dashboard: "
        f"{'http://' + url if url and not url.startswith('http') else url or 'not available'}"
        + (" (sign in with the token in ~/.ray/auth_token)" if token and url else "")
        + ("; on a cluster launched with cluster.yaml, `ray dashboard cluster.yaml` forwards it" if address else "")
    )
    return ray
