"""Read a W&B offline run's records back from its ``run-*.wandb`` file, for the tests.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of
records, each a 7-byte header (CRC-32, length, type: 1 whole, 2 first, 3 middle, 4 last piece) and a piece
of a serialised ``wandb_internal_pb2.Record``.
"""

import struct
from pathlib import Path

BLOCK = 32 * 1024


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), path
    out, pos, pieces = [], 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            out.append(record)
            pieces = b""
    return out


def run_contents(folder: Path) -> dict:
    """An offline run folder's config, history rows, summary and artifacts (name -> file paths)."""
    import json

    (path,) = folder.glob("run-*.wandb")
    config, history, summary, artifacts, run = {}, [], {}, {}, None
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        elif kind == "artifact":
            artifacts[r.artifact.name] = [m.path for m in r.artifact.manifest.contents]
    return {"run": run, "config": config, "history": history, "summary": summary, "artifacts": artifacts}
