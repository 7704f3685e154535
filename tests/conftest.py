"""Shared fixtures: small real models and data, no mocks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# W&B and Ray must never reach out of the machine during tests.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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
