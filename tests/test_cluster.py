"""The cluster: cluster.yaml against Ray's own validation, and a real four-node Ray cluster on this machine
(head, trial worker, two edge hosts of two kinds) running edge_tune as a Ray job."""

import copy
import csv
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

LAB = re.search(r"```yaml\n(.*?)```", (REPO / "docs" / "cluster.md").read_text(), re.S)


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` does before anything starts


@pytest.mark.parametrize("name", ["cluster.yaml", "docs/cluster.md (lab)"])
def test_cluster_configs_pass_rays_validation(name):
    text = (REPO / "cluster.yaml").read_text() if name == "cluster.yaml" else LAB.group(1)
    config = yaml.safe_load(text)
    _validate(config)
    broken = {**config, "max_worker": 2}  # a misspelt key: Ray's schema refuses it
    with pytest.raises(Exception, match="max_worker"):
        _validate(broken)


def test_every_key_of_cluster_yaml_is_commented():
    lines = (REPO / "cluster.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^(\w+|  \w+|    \w+):", line) and not line.strip().startswith("#"):
            above = lines[i - 1].strip() if i else ""
            inline = "#" in line
            assert above.startswith("#") or inline or lines[i - 1].rstrip().endswith(":"), line
    config = yaml.safe_load("\n".join(lines))
    types = config["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] == 1 and types[config["head_node_type"]]["resources"]["CPU"] == 0
    assert "edge_device" in (REPO / "cluster.yaml").read_text()  # how the edge host joins


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster_nodes(tmp_path):
    """``ray start`` four times: a head with no CPUs for tasks, a 2-CPU trial worker, and two 1-CPU edge hosts
    of two kinds, each advertising its kind's resource (docs/cluster.md)."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}  # Ray's default on `ray start`
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _free_port(), _free_port()
    nodes = [
        ["--head", f"--port={port}", "--num-cpus=0", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"],
        [f"--address=127.0.0.1:{port}", "--num-cpus=2"],
        [f"--address=127.0.0.1:{port}", "--num-cpus=1", '--resources={"edge_device_cpu": 1}'],
        [f"--address=127.0.0.1:{port}", "--num-cpus=1", '--resources={"edge_device_ort_cpu": 1}'],
    ]
    try:
        for args in nodes:
            started = subprocess.run([ray, "start", *args], env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stderr[-2000:]
        yield env, port, dashboard
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


PLACEMENT = """
import json, sys, ray
from ray.util.state import list_actors, list_nodes
ray.init(address=sys.argv[1], log_to_driver=False)
nodes = {n.node_id: n.resources_total for n in list_nodes()}
print(json.dumps([[a.class_name, nodes.get(a.node_id, {})] for a in list_actors(detail=True, limit=1000)]))
"""


def test_a_ray_job_puts_each_kinds_device_on_its_edge_host(cluster_nodes, cache_dir, tmp_path):
    """A Ray job on the head measures every candidate on OpenVINO CPU and on ONNX Runtime CPU: Ray places
    each kind's actor on the edge host that advertises the kind, and the trials on the worker."""
    env, port, dashboard = cluster_nodes
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    job = subprocess.run(
        [
            ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--",
            sys.executable, "-m", "edge_tune.run", "--space", str(REPO / "search_spaces" / "filter_prune.yaml"),
            "--smoke", "--wandb", "off", "--accuracy-threshold", "0", "--device", "CPU", "--also-device", "ort:CPU",
            "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path), "--name", "job",
        ],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "Ray joined at" in job.stdout, job.stdout[-2000:]  # the job's RAY_ADDRESS: no Ray of its own
    rows = list(csv.DictReader(open(tmp_path / "job" / "results.csv")))
    assert len(rows) == 2 and all(float(r["speedup_ort_cpu"]) > 0 and float(r["speedup_cpu"]) > 0 for r in rows)
    out = subprocess.run(
        [sys.executable, "-c", PLACEMENT, f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    actors = json.loads(out.stdout.strip().splitlines()[-1])
    device = [res for name, res in actors if name == "EdgeDevice"]
    trials = [res for name, res in actors if name == "ImplicitFunc"]  # Tune's function trainables
    assert sorted(k for res in device for k in res if k.startswith("edge_device")) == [
        "edge_device_cpu", "edge_device_ort_cpu",
    ]  # fmt: skip
    assert len(trials) == 2 and all(res.get("CPU") == 2 and not any("edge" in k for k in res) for res in trials)


NAMED = """
from ray.util.state import list_jobs
from edge_tune.cluster import start_ray
from edge_tune.config import ExperimentConfig
from edge_tune.space import find_space
ray = start_ray(ExperimentConfig(space=find_space("filter_prune")), "my-experiment")
print([j.metadata for j in list_jobs(detail=True) if j.type == "DRIVER"])
ray.shutdown()
"""


def test_a_local_run_names_its_experiment_in_the_dashboards_jobs():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", NAMED], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dashboard: http://127.0.0.1:" in out.stdout
    meta = out.stdout.strip().splitlines()[-1]
    assert "'edge_tune_experiment': 'my-experiment'" in meta and "'edge_tune_space': 'filter_prune'" in meta
