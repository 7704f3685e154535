"""The device protocol: an ``Engine`` served to another process over a pair of pipes.

``--device-python PATH`` runs the OpenVINO runtime under another interpreter
(an old Python with OpenVINO 2021.4 for a Neural Compute Stick 2, say). The
host starts ``PATH -c BOOTSTRAP PACKAGE_DIR``, which imports this module from
edge_tune's source directory without installing anything there, and the two
exchange messages: requests on the server's stdin, replies on its stdout.
Anything the runtime prints goes to stderr, which the host keeps for error
messages.

A message is one frame::

    uint32 big-endian  n          length of the header
    n bytes            header     UTF-8 JSON object (NaN and Infinity allowed)
    blob 0, blob 1 ... raw bytes  as many as header["blobs"] lists, of those lengths

In the JSON, ``{"$blob": i}`` stands for blob i as bytes and
``{"$array": i, "dtype": "<f4", "shape": [1, 1, 32, 32]}`` for blob i as a
C-ordered numpy array. A request is ``{"id": k, "op": NAME, "args": {...}}``;
its reply ``{"id": k, "ok": true, "result": ...}`` or ``{"id": k, "ok": false,
"error": CLASS, "message": TEXT}``. The first request must be ``open``
(``device``, ``precision``, ``threads``), answered with the engine's
``describe()`` plus ``protocol`` and ``pid``; then any of ``OPS`` with the
arguments of the ``Engine`` method of that name; ``close`` ends the server,
and so does the end of its stdin.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

__all__ = ["BOOTSTRAP", "OPS", "PROTOCOL", "decode", "encode", "read_frame", "serve"]

PROTOCOL = 3  # 3: a profile plan (repeats, inferences, warm-up, cap) and the baseline profiled alongside
OPS = ("load", "release", "set_baseline", "measure", "predict")  # Engine methods served

# Makes edge_tune.device importable from its source directory alone, without
# running the package's __init__ files (they import torch, Ray and more).
BOOTSTRAP = """
import sys, types
root = sys.argv[1]
for name, path in (("edge_tune", root), ("edge_tune.device", root + "/device")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from edge_tune.device.protocol import serve
sys.exit(serve())
"""


def _pack(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, np.ndarray):
        blobs.append(np.ascontiguousarray(value).tobytes())
        return {"$array": len(blobs) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        blobs.append(bytes(value))
        return {"$blob": len(blobs) - 1}
    if isinstance(value, dict):
        return {str(k): _pack(v, blobs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, blobs) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, dict):
        if "$array" in value:
            data = blobs[value["$array"]]
            return np.frombuffer(data, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        if "$blob" in value:
            return blobs[value["$blob"]]
        return {k: _unpack(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, blobs) for v in value]
    return value


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``; bytes and numpy arrays travel as blobs."""
    blobs: list[bytes] = []
    header = _pack(message, blobs)
    header["blobs"] = [len(b) for b in blobs]
    head = json.dumps(header).encode("utf-8")
    return b"".join([struct.pack(">I", len(head)), head, *blobs])


def decode(header: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    """The message of a frame read by ``read_frame``."""
    out: dict[str, Any] = _unpack({k: v for k, v in header.items() if k != "blobs"}, blobs)
    return out


def read_frame(read: Callable[[int], bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Read one frame with ``read(n)`` (up to n bytes, fewer only at the end); EOFError at the end."""

    def exact(n: int) -> bytes:
        data = read(n)
        if len(data) != n:
            raise EOFError("the stream ended" + (" inside a frame" if data or n != 4 else ""))
        return data

    header = json.loads(exact(struct.unpack(">I", exact(4))[0]).decode("utf-8"))
    return header, [exact(n) for n in header.get("blobs", [])]


def serve(inp: BinaryIO | None = None, out: BinaryIO | None = None) -> int:
    """Answer requests until ``close`` or the end of ``inp``; the server's main loop."""
    from edge_tune.device.engine import open_engine

    if out is None:
        # Replies own the real stdout; whatever the runtime prints goes to stderr.
        out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    read = (inp if inp is not None else sys.stdin.buffer).read  # buffered: n bytes unless the stream ends
    engine: Any = None
    while True:
        try:
            request = decode(*read_frame(read))
        except EOFError:
            return 0
        op, args = request.get("op"), request.get("args", {})
        reply: dict[str, Any] = {"id": request.get("id"), "ok": True}
        try:
            if op == "close":
                reply["result"] = None
            elif op == "open":
                engine = open_engine(args["device"], args["precision"], int(args["threads"]))
                reply["result"] = dict(engine.describe(), protocol=PROTOCOL, pid=os.getpid())
            elif op in OPS and engine is not None:
                reply["result"] = getattr(engine, op)(**args)
            else:
                raise ValueError(f"unknown request {op!r} (open first, then one of {', '.join(OPS)})")
        except Exception as exc:
            reply = {
                "id": request.get("id"),
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        out.write(encode(reply))
        out.flush()
        if op == "close":
            return 0
