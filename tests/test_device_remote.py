"""The device protocol and ``--device-python``: the runtime in another interpreter, and what happens when it fails."""

import io
import math
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from edge_tune.device import DeviceConfig, DeviceRunner, EngineDied, ModelError, RemoteEngine, TimingPlan
from edge_tune.device.protocol import PROTOCOL, decode, encode, read_frame, serve
from edge_tune.errors import UserError
from edge_tune.export import to_onnx

LONG = DeviceConfig(timing=TimingPlan(warmup=2, iters_per_round=5, min_rounds=5, target_ci=0.0, time_cap_s=3.0))


def _frames(data: bytes) -> list[dict]:
    stream, out = io.BytesIO(data), []
    while True:
        try:
            out.append(decode(*read_frame(stream.read)))
        except EOFError:
            return out


def test_frames_carry_nested_values_arrays_and_bytes():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[1, 2]], dtype=np.int64), np.zeros(0, np.uint8)]
    message = {"id": 3, "op": "x", "args": {"a": arrays, "b": b"\x00\xff", "c": [1.5, math.nan, None, "s"]}}
    (back,) = _frames(encode(message))
    assert back["id"] == 3 and back["args"]["b"] == b"\x00\xff"
    for sent, got in zip(arrays, back["args"]["a"], strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape and np.array_equal(got, sent)
    assert back["args"]["c"][0] == 1.5 and math.isnan(back["args"]["c"][1]) and back["args"]["c"][2:] == [None, "s"]


def test_a_frame_cut_short_is_an_error_not_a_message():
    data = encode({"id": 1, "op": "load", "args": {"onnx_bytes": b"x" * 100}})
    with pytest.raises(EOFError, match="inside a frame"):
        read_frame(io.BytesIO(data[:-10]).read)


def test_the_server_answers_each_request_in_order(resnet20, example):
    onnx_bytes = to_onnx(resnet20, example)
    requests = [
        {"id": 1, "op": "load", "args": {"onnx_bytes": onnx_bytes}},  # before open: refused
        {"id": 2, "op": "open", "args": {"device": "CPU", "precision": "f32", "threads": 1}},
        {"id": 3, "op": "load", "args": {"onnx_bytes": onnx_bytes}},
        {"id": 4, "op": "load", "args": {"onnx_bytes": b"not onnx"}},
        {"id": 5, "op": "format_disk", "args": {}},
        {"id": 6, "op": "close", "args": {}},
        {"id": 7, "op": "load", "args": {"onnx_bytes": onnx_bytes}},  # after close: never read
    ]
    out = io.BytesIO()
    assert serve(io.BytesIO(b"".join(encode(r) for r in requests)), out) == 0
    replies = _frames(out.getvalue())
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5, 6]
    assert not replies[0]["ok"] and "open first" in replies[0]["message"]
    opened = replies[1]["result"]
    assert replies[1]["ok"] and opened["protocol"] == PROTOCOL and "CPU" in opened["devices"]
    assert replies[2]["ok"] and replies[2]["result"]["input_shape"] == [1, 1, 32, 32]
    assert replies[2]["result"]["macs"] > 0
    assert replies[3]["error"] == "ModelError" and not replies[4]["ok"] and replies[5]["ok"]


def test_device_python_runs_in_its_own_interpreter(second_python, resnet20, example):
    runner = DeviceRunner(replace(LONG, python=second_python), to_onnx(resnet20, example))
    try:
        info = runner.info()
        assert info["server_pid"] and info["server_pid"] != os.getpid()
        with open(f"/proc/{info['server_pid']}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0].decode() == second_python
        with pytest.raises(ModelError, match="cannot read"):
            runner.benchmark(b"not onnx")  # the server's error, raised here as the same class
    finally:
        runner.close()
    assert runner.engine._proc.poll() is not None  # closed: the server is gone


def _during_benchmark(runner, pruned, action):
    """Start a benchmark, do ``action(server_pid)`` a second into it, return what the benchmark raised."""
    pid = runner.info()["server_pid"]
    timer = threading.Timer(1.0, action, args=(pid,))
    timer.start()
    try:
        with pytest.raises(EngineDied) as err:
            runner.benchmark(pruned)
    finally:
        timer.cancel()
    return err.value


@pytest.fixture
def pruned(resnet20, example):
    from edge_tune.compression import PrunerSpec, apply_pruners

    apply_pruners(
        resnet20, [PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", 0.5, ("layer1.0.conv1",))], example
    )
    return to_onnx(resnet20, example)


def test_a_server_killed_mid_benchmark_is_reported_with_its_exit_code(second_python, resnet20, example, pruned):
    runner = DeviceRunner(replace(LONG, python=second_python))
    runner.set_baseline(to_onnx(resnet20, example))
    err = _during_benchmark(runner, pruned, lambda pid: os.kill(pid, signal.SIGKILL))
    assert "exit code -9" in str(err) and "measure" in str(err)


def test_a_hung_server_misses_its_deadline_instead_of_hanging_the_trial(second_python, resnet20, example, pruned):
    runner = DeviceRunner(replace(LONG, python=second_python, server_timeout_s=5.0))
    runner.set_baseline(to_onnx(resnet20, example))
    start = time.monotonic()
    err = _during_benchmark(runner, pruned, lambda pid: os.kill(pid, signal.SIGSTOP))
    assert "no reply to 'measure' within 5 s" in str(err)
    assert time.monotonic() - start < 60  # bounded by the deadline, not by the stopped server
    assert runner.engine._proc.poll() is not None  # and the stopped server was killed


def test_an_interpreter_without_openvino_is_a_user_error(tmp_path, monkeypatch):
    import subprocess
    import sys

    drain = RemoteEngine._drain

    def late_drain(self):  # stderr read only after the exit is seen: the error must still carry it
        time.sleep(0.5)
        drain(self)

    monkeypatch.setattr(RemoteEngine, "_drain", late_drain)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    with pytest.raises(UserError) as err:
        RemoteEngine(str(tmp_path / "bare" / "bin" / "python"), "CPU", "f32", 1, timeout_s=60)
    text = str(err.value)
    assert "--device-python" in text and "numpy" in text and "openvino" in text and "ModuleNotFoundError" in text


def test_a_missing_interpreter_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"--device-python .*nowhere.*cannot start"):
        RemoteEngine(str(tmp_path / "nowhere" / "python"), "CPU", "f32", 1)


def test_a_missing_device_names_the_remote_runtime(legacy_python):
    with pytest.raises(UserError) as err:
        DeviceRunner(DeviceConfig(device="MYRIAD", python=legacy_python))
    assert "MYRIAD" in str(err.value) and "2021.4" in str(err.value) and "CPU" in str(err.value)
