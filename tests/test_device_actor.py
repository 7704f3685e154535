"""The EdgeDevice actor under a real local Ray: serialised jobs, restarts, metrics."""

import os
import signal
import socket
import time
import urllib.request

import pytest

from edge_tune.device import DeviceConfig, TimingPlan, start_device
from edge_tune.errors import UserError
from edge_tune.export import to_onnx

# A benchmark that always runs to its 2-second cap: long enough to interrupt.
SLOW = DeviceConfig(
    timing=TimingPlan(warmup=2, iters_per_round=5, min_rounds=5, target_ci=0.0, time_cap_s=2.0),
    profile_repeats=1,
    profile_inferences=2,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_metrics_report_interval_ms"] = "1000"  # export metrics every second, not every ten
    port = _free_port()
    ctx = ray.init(
        num_cpus=5,
        resources={"edge_device": 1, "spare_device": 1, "remote_device": 1, "pool_device": 2},
        include_dashboard=True,  # as edge_tune.run starts it
        dashboard_host="127.0.0.1",
        _metrics_export_port=port,
        namespace="edge_tune",
        log_to_driver=False,
    )
    ray.dashboard_url = ctx.dashboard_url
    yield ray, port
    ray.shutdown()


@pytest.fixture(scope="module")
def actor(ray_local, digits):
    import torch

    from edge_tune.compression import PrunerSpec, apply_pruners
    from edge_tune.models import create_model

    torch.manual_seed(0)
    example = torch.zeros(1, 1, 32, 32)
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    onnx_bytes = to_onnx(model, example)
    handle = start_device(SLOW, onnx_bytes, (digits.x_val[:32].numpy(), digits.y_val[:32].numpy()))
    apply_pruners(
        model, [PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", 0.5, ("layer1.0.conv1",))], example
    )
    return handle, onnx_bytes, to_onnx(model, example)


def test_jobs_queue_and_run_one_at_a_time(ray_local, actor, capsys):
    from edge_tune.progress import await_device

    ray, _ = ray_local
    handle, onnx_bytes, _pruned = actor
    first = handle.benchmark.remote(onnx_bytes)
    second = handle.evaluate.remote(onnx_bytes)
    seen: dict = {"queue_length": 0}
    deadline = time.time() + 10
    while time.time() < deadline and not (seen["queue_length"] == 1 and seen.get("job")):
        seen = ray.get(handle.info.remote())
        time.sleep(0.05)
    assert seen["queue_length"] == 1  # one job waited while the other held the device (either may go first)
    assert seen["job"] in ("benchmark", "evaluate") and seen["job_seconds"] >= 0  # what the status line shows
    result = await_device(first, "benchmark", SLOW, quiet=False, every_s=0.1)  # the driver's progress bar
    accuracy = ray.get(second)
    assert result.rounds >= 5 and not result.converged and accuracy.images == 32
    bars = [line for line in capsys.readouterr().out.splitlines() if "benchmark [" in line]
    assert bars and "timing stops by 2s" in bars[0]
    info = ray.get(handle.info.remote())
    assert info["queue_length"] == 0 and info["job"] is None


def test_killed_mid_benchmark_restarts_and_retries(ray_local, actor):
    ray, _ = ray_local
    handle, _onnx_bytes, pruned = actor
    pid = ray.get(handle.info.remote())["pid"]
    pending = handle.benchmark.remote(pruned)  # a new architecture: no cache hit
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    result = ray.get(pending, timeout=120)  # retried on the restarted actor
    assert result.rounds >= 5 and result.speedup > 0
    assert ray.get(handle.info.remote())["pid"] != pid


def test_a_device_server_killed_mid_benchmark_restarts_the_actor_and_retries(ray_local, actor, second_python, digits):
    from dataclasses import replace

    from edge_tune.device.actor import _discard

    ray, _ = ray_local
    _handle, onnx_bytes, pruned = actor
    # A server that hangs instead of dying is stopped after 30 s and restarted the same way.
    cfg = replace(SLOW, python=second_python, actor_name="remote", resource="remote_device", server_timeout_s=30.0)
    remote = start_device(cfg, onnx_bytes, (digits.x_val[:32].numpy(), digits.y_val[:32].numpy()))
    try:
        before = ray.get(remote.info.remote())
        assert before["server_pid"] and before["server_pid"] != before["pid"]
        pending = remote.benchmark.remote(pruned)
        time.sleep(1.0)
        os.kill(before["server_pid"], signal.SIGKILL)
        result = ray.get(pending, timeout=240)  # retried on the restarted actor, with a new server
        assert result.rounds >= 5 and result.speedup > 0
        after = ray.get(remote.info.remote())
        assert after["pid"] != before["pid"] and after["server_pid"] != before["server_pid"]
    finally:
        _discard(remote, cfg.actor_name)


def test_a_pool_sends_each_job_to_a_free_device_and_goes_on_without_one_it_lost(ray_local, actor, digits):
    """--devices 2: two EdgeDevice actors, each with its own baseline, behind one pool actor."""
    from dataclasses import replace

    import torch

    from edge_tune.compression import PrunerSpec, apply_pruners
    from edge_tune.device import get_device
    from edge_tune.device.actor import _discard
    from edge_tune.models import create_model

    ray, _ = ray_local
    _, onnx_bytes, _ = actor
    example = torch.zeros(1, 1, 32, 32)
    models = []
    for ratio in (0.25, 0.5, 0.75, 0.9):  # four architectures: no cache hit among them
        model = create_model("resnet20", num_classes=10, in_channels=1).eval()
        spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", ratio, (r"layer2\.\d\.conv1",))
        apply_pruners(model, [spec], example)
        models.append(to_onnx(model, example))
    cfg = replace(SLOW, actor_name="pool", resource="pool_device", count=2)
    pool = start_device(cfg, onnx_bytes, (digits.x_val[:32].numpy(), digits.y_val[:32].numpy()))
    try:
        first = ray.get([pool.benchmark.remote(m, False) for m in models[:2]], timeout=120)
        info = ray.get(pool.info.remote())
        assert info["pool"]["jobs"] == {"pool/0": 1, "pool/1": 1}  # both free: one job each
        assert all(r.rounds >= 5 and r.speedup > 0 and not r.cached for r in first)
        again = ray.get(pool.benchmark.remote(models[0], False))  # the cache is the pool's: no device is asked
        assert again.cached and again.speedup == first[0].speedup
        assert ray.get(pool.info.remote())["pool"]["jobs"] == {"pool/0": 1, "pool/1": 1}
        ray.kill(get_device("pool/0"), no_restart=True)  # lost for good: Ray will not bring it back
        rest = ray.get([pool.benchmark.remote(m, False) for m in models[2:]], timeout=120)
        assert all(r.rounds >= 5 and not r.cached for r in rest)  # both jobs done, on the device left
        info = ray.get(pool.info.remote())
        assert info["pool"]["down"] == ["pool/0"] and info["pool"]["jobs"]["pool/1"] == 3
        assert ray.get(pool.evaluate.remote(onnx_bytes)).images == 32
    finally:
        for name in ("pool/0", "pool/1", "pool"):
            try:
                _discard(get_device(name), name)
            except ValueError:
                pass


def test_metrics_reach_the_metrics_endpoint(ray_local, actor):
    ray, port = ray_local
    handle, onnx_bytes, _pruned = actor
    ray.get(handle.benchmark.remote(onnx_bytes))
    ray.get(handle.benchmark.remote(onnx_bytes))  # the second is a cache hit
    wanted = (
        "ray_edge_tune_device_cache_hits",
        "ray_edge_tune_device_job_seconds",
        "ray_edge_tune_device_queue_length",
        "ray_edge_tune_device_busy_fraction",
    )
    text = ""
    deadline = time.time() + 60
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if all(w in text for w in wanted):
            break
        time.sleep(1)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not exported: {missing}"
    hits = [line for line in text.splitlines() if line.startswith("ray_edge_tune_device_cache_hits")]
    assert any(float(line.rsplit(" ", 1)[1]) >= 1 for line in hits)


def test_missing_device_is_a_user_error(ray_local, actor):
    _, onnx_bytes, _ = actor
    with pytest.raises(UserError, match="available: CPU"):
        start_device(DeviceConfig(device="MYRIAD", actor_name="missing", resource="spare_device"), onnx_bytes, None)


def test_a_resource_no_node_has_is_a_user_error(ray_local, actor):
    _, onnx_bytes, _ = actor
    with pytest.raises(UserError, match="advertises the resource 'ncs2'"):
        start_device(DeviceConfig(actor_name="other", resource="ncs2"), onnx_bytes, None)


def test_more_devices_than_the_cluster_advertises_is_a_user_error(ray_local, actor):
    _, onnx_bytes, _ = actor
    with pytest.raises(UserError, match=r"--devices 3: this Ray cluster advertises 2 unit\(s\) of 'pool_device'"):
        start_device(DeviceConfig(actor_name="three", resource="pool_device", count=3), onnx_bytes, None)


def test_a_taken_device_times_out_with_a_user_error(ray_local, actor):
    _, onnx_bytes, _ = actor  # the module's actor holds "edge_device"
    with pytest.raises(UserError, match="is taken"):
        start_device(DeviceConfig(actor_name="second"), onnx_bytes, None, start_timeout_s=3)


def test_dashboard_answers_and_lists_the_device_actor(ray_local, actor):
    """What a user sees in the Ray dashboard: the EdgeDevice actor, alive, on the node holding the device."""
    import json

    from ray.util.state import list_actors, list_nodes

    ray, _ = ray_local
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    # Ray 2.60 turns token authentication on for a new local cluster: the dashboard wants the token.
    request = urllib.request.Request(
        f"http://{ray.dashboard_url}/api/version", headers=get_auth_headers_if_auth_enabled({})
    )
    version = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert version["ray_version"] == ray.__version__
    (device,) = list_actors(filters=[("class_name", "=", "EdgeDevice"), ("state", "=", "ALIVE")])
    assert device.name == DeviceConfig().actor_name and device.ray_namespace == "edge_tune"
    (node,) = [n for n in list_nodes() if n.node_id == device.node_id]
    assert node.resources_total.get("edge_device") == 1
