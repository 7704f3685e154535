"""Shared fixtures: small real models and data, no mocks."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# W&B and Ray must never reach out of the machine during tests.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The user's cache (baselines, and the records of which experiment folders --resume may trust) is the
# session's own: tests leave the real one alone and never find what an earlier session left there.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="edge_tune-test-cache-")


@pytest.fixture(scope="session")
def digits():
    from edge_tune.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def resnet20():
    from edge_tune.models import create_model

    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=1).eval()


@pytest.fixture
def example():
    return torch.zeros(1, 1, 32, 32)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One baseline cache for the whole session: the smoke baseline trains once."""
    return tmp_path_factory.mktemp("cache")


def _runs(python: str) -> bool:
    import subprocess

    return subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0


def find_python(*versions: str) -> str | None:
    """An interpreter of one of ``versions`` ("3.9", ...): on PATH, or one pyenv has installed."""
    import shutil
    import subprocess

    for v in versions:
        found = shutil.which(f"python{v}")
        if found and _runs(found):
            return found
    if shutil.which("pyenv"):
        installed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        for v in versions:
            for name in installed:
                if name.startswith(v + "."):
                    prefix = subprocess.run(["pyenv", "prefix", name], capture_output=True, text=True).stdout.strip()
                    python = str(Path(prefix) / "bin" / "python")
                    if prefix and _runs(python):
                        return python
    return None


def device_venv(request, name: str, python: str, *requirements: str) -> str:
    """A virtual environment holding only ``requirements``, kept in pytest's cache between runs."""
    import shutil
    import subprocess

    target = request.config.cache.mkdir("device-venvs") / name
    py = target / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", "import numpy, openvino"], capture_output=True).returncode == 0):
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(target)], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements], check=True)
    return str(py)


@pytest.fixture(scope="session")
def second_python(request) -> str:
    """Another interpreter with the current openvino (and numpy), and nothing of edge_tune's."""
    import openvino

    version = openvino.get_version().split("-")[0]
    return device_venv(request, f"openvino-{version}", sys.executable, f"openvino=={version}")


@pytest.fixture(scope="session")
def legacy_python(request) -> str:
    """Python 3.9 (or older) with OpenVINO 2021.4, the runtime that still carries MYRIAD."""
    python = os.environ.get("EDGE_TUNE_LEGACY_PYTHON") or find_python("3.9", "3.8", "3.7")
    if python is None:
        pytest.skip("no Python 3.7-3.9 here to host OpenVINO 2021.4")
    return device_venv(request, "openvino-2021.4", python, "openvino==2021.4.2")


def run_cli(*args: str, cwd: Path, timeout: int = 600):
    """Run the real CLI in a subprocess, as a user would."""
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edge_tune.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
