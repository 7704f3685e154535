"""``RemoteEngine``: the ``Engine`` interface served by another Python interpreter.

It starts ``python -c protocol.BOOTSTRAP`` (see ``device.protocol`` for the
wire format) and forwards each call. Every call has a deadline: a server that
dies, hangs, or stops reading raises ``EngineDied`` with the end of its
stderr, instead of hanging the trial; the ``EdgeDevice`` actor answers that by
exiting, so Ray restarts it (and the server) and retries the request.
"""

from __future__ import annotations

import collections
import os
import select
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edge_tune.device.engine import ModelError
from edge_tune.device.protocol import BOOTSTRAP, PROTOCOL, decode, encode, read_frame
from edge_tune.errors import UserError

__all__ = ["EngineDied", "RemoteEngine"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # edge_tune/, imported by the server from source


class EngineDied(RuntimeError):
    """The device server exited, hung past its deadline, or broke the protocol."""


class RemoteEngine:
    """Start a device server under ``python`` and open ``device`` there."""

    def __init__(self, python: str, device: str, precision: str, threads: int, timeout_s: float = 300.0) -> None:
        self.python = python
        self.timeout_s = timeout_s  # per request; measure, predict and compile included
        self._ids = 0
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        try:
            self._proc = subprocess.Popen(
                [python, "-c", BOOTSTRAP, str(PACKAGE_DIR)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise UserError(f"--device-python {python}: cannot start it ({exc.strerror})") from None
        weakref.finalize(self, _stop, self._proc)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        assert self._proc.stdin is not None
        os.set_blocking(self._proc.stdin.fileno(), False)
        try:
            self.description: dict[str, Any] = self._call("open", device=device, precision=precision, threads=threads)
        except (EngineDied, RuntimeError) as exc:
            self.close()
            raise UserError(
                f"--device-python {python}: the device server did not start: {exc}. That interpreter needs "
                "numpy and openvino (2022.1 or later, or 2021.4 for MYRIAD) installed; see docs/device.md"
            ) from None
        if self.description.get("protocol") != PROTOCOL:
            self.close()
            raise UserError(f"--device-python {python}: the server speaks protocol {self.description.get('protocol')}")

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def describe(self) -> dict[str, Any]:
        return dict(self.description)

    def load(self, onnx_bytes: bytes) -> dict[str, Any]:
        out: dict[str, Any] = self._call("load", onnx_bytes=onnx_bytes)
        return out

    def release(self, handle: int) -> None:
        if self._proc.poll() is None:  # a dead server holds nothing; its error is already on its way
            self._call("release", handle=handle)

    def set_baseline(self, handle: int, x: np.ndarray, profile: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._call("set_baseline", handle=handle, x=x, profile=profile)
        return out

    def measure(self, handle: int, plan: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = self._call("measure", handle=handle, plan=plan, profile=profile)
        return out

    def predict(self, handle: int, images: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._call("predict", handle=handle, images=images)
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._call("close", timeout_s=5.0)
            except (EngineDied, RuntimeError):
                pass
        _stop(self._proc)

    # -- the pipe ------------------------------------------------------------------------------
    def _call(self, op: str, timeout_s: float | None = None, **args: Any) -> Any:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        self._ids += 1
        self._write(encode({"id": self._ids, "op": op, "args": args}), deadline, op)
        reply = decode(*read_frame(lambda n: self._read(n, deadline, op)))
        if reply.get("id") != self._ids:
            raise self._died(f"the reply to {op!r} carries id {reply.get('id')}, not {self._ids}")
        if reply["ok"]:
            return reply.get("result")
        if reply["error"] == "ModelError":
            raise ModelError(reply["message"])
        raise RuntimeError(f"the device server failed in {op!r}: {reply['error']}: {reply['message']}")

    def _write(self, data: bytes, deadline: float, op: str) -> None:
        assert self._proc.stdin is not None
        fd, view = self._proc.stdin.fileno(), memoryview(data)
        while view:
            _, ready, _ = select.select([], [fd], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise self._died(f"it stopped reading requests ({op!r} timed out)")
            try:
                view = view[os.write(fd, view[:65536]) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._died(f"it exited before {op!r}") from None

    def _read(self, n: int, deadline: float, op: str) -> bytes:
        assert self._proc.stdout is not None
        fd, chunks, got = self._proc.stdout.fileno(), [], 0
        while got < n:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise self._died(f"no reply to {op!r} within {self.timeout_s:.0f} s")
            chunk = os.read(fd, n - got)
            if not chunk:
                raise self._died(f"it exited during {op!r}")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _died(self, what: str) -> EngineDied:
        _stop(self._proc)
        code = self._proc.poll()
        self._drainer.join(timeout=5.0)  # the exited server's last words may still be in the pipe
        tail = " | ".join(line for line in self._stderr if "[WARN]" not in line)[-1500:]
        return EngineDied(
            f"device server ({self.python}, exit code {code}): {what}" + (f"; stderr: {tail}" if tail else "")
        )

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
