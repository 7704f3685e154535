"""An interrupted search resumes without repeating finished trials: a real SIGTERM (with a trial's worker
killed before it) and a real kill -9 of the driver, of a real run; and only folders this user's runs wrote."""

import csv
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli


def _finished_trials(exp: Path) -> dict[str, int]:
    """Trial folder -> how many final results it reported."""
    out = {}
    for result in exp.glob("*/result.json"):
        out[result.parent.name] = sum('"final": true' in line for line in result.read_text().splitlines())
    return {k: v for k, v in out.items() if v}


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it: Ray's GCS, raylet, dashboard, agents and workers of a local run."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def _outward_listeners(pids: set[int]) -> list[str]:
    """TCP listeners of ``pids`` on an address other than loopback: what ``ss -ltnp`` shows, read from the
    same kernel tables (``/proc/net/tcp*`` for listening sockets, ``/proc/PID/fd`` for their owners)."""
    listening: dict[str, str] = {}  # socket inode -> address:port
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[k : k + 4][::-1] for k in range(0, len(raw), 4))  # each 32-bit word is little-endian
            host = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)
            listening[fields[9]] = f"{host}:{int(port, 16)}"
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        for link in links:
            where = listening.get(link.removeprefix("socket:[").removesuffix("]"))
            if where and where.rsplit(":", 1)[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                found.append(f"pid {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()}) listens on {where}")
    return found


def _trial_workers(pids: set[int]) -> list[int]:
    """Tune's function-trainable actors (one per running trial) among ``pids``."""
    return [p for p in pids if "ImplicitFunc" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_interrupt_then_resume_keeps_finished_and_errored_trials(cache_dir, tmp_path, sig):
    """SIGTERM (docker stop, systemd, Slurm) stops the search as Ctrl-C does: exit 143 and the --resume
    command; kill -9 of the driver loses at most a second. Before either, the second trial's worker is
    killed: that trial errors, is kept as errored, is not run again on --resume (also when the driver died
    before Tune's saved state said so), and its point is not proposed again. Meanwhile, no process of the
    run listens on any address but loopback."""
    exp = tmp_path / "out" / "resumable"
    samples = 3
    cmd = [sys.executable, "-m", "edge_tune.run", "--space", "filter_prune", "--smoke", "--num-samples", str(samples),
           "--max-concurrent", "1", "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path / "out"),
           "--name", "resumable"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listeners, killed = [], False
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        pids = _descendants(proc.pid)
        listeners += _outward_listeners(pids)
        finished = _finished_trials(exp)
        if len(finished) == 1 and not killed and (workers := _trial_workers(pids)):
            if len(list(exp.glob("run_trial_*"))) == 2:  # the second trial is running: its worker dies
                os.kill(workers[0], signal.SIGKILL)
                killed = True
        if killed and len(list(exp.glob("run_trial_*"))) == 3:  # the third has started
            break
    assert proc.poll() is None, "the run ended before it could be interrupted"
    assert listeners == [], listeners
    before = _finished_trials(exp)
    assert len(before) == 1
    if sig == signal.SIGKILL:
        time.sleep(3)  # Tune saves its state within a second of an event; kill -9 gives it no other chance
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, out[-2000:]
        assert "interrupted by SIGTERM" in out and f"--resume {exp}" in out
        assert "errored, the search goes on" in out
        assert "Traceback" not in out.split("SIGTERM received")[-1]
    else:
        assert proc.returncode == -9
    assert not (exp / "results.csv").exists()  # it really stopped before the end

    resumed = run_cli("--resume", str(exp), cwd=tmp_path)  # from another folder, as a user might
    assert resumed.returncode in (0, 3), resumed.stderr[-3000:] + resumed.stdout[-2000:]
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert len(rows) == samples
    assert "searcher restored with 1 observation(s)" in resumed.stdout  # the GP's data came back
    after = _finished_trials(exp)
    for trial, finals in before.items():
        assert after[trial] == finals == 1  # finished before the interrupt: kept, not run again
    configs = [tuple(r[f"config/stage{i}_ratio"] for i in (1, 2, 3)) for r in rows]
    assert len(set(configs)) == samples  # the errored point was not proposed again
    assert [r["status"] for r in rows].count("error") == 1 and len(after) == 2  # the errored trial: not run again
    assert len(list(exp.glob("run_trial_*"))) == 3
    assert f"trial 3/{samples}" in resumed.stdout and "trial 1/" not in resumed.stdout  # the counter counts on
    _hostile_copies_are_refused(exp, tmp_path)


def _hostile_copies_are_refused(exp: Path, tmp_path: Path) -> None:
    """A folder this user's run wrote resumes (above, even after kill -9); altered copies do not, and the
    altered pickle never runs."""
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(marker)))
    for name, alter in [
        ("tuner.pkl", lambda d: (d / "tuner.pkl").write_bytes(evil)),
        ("experiment_state", lambda d: next(d.glob("experiment_state-*.json")).write_bytes(evil)),
        ("edge_tune_run.json", lambda d: (d / "edge_tune_run.json").write_text(
            (d / "edge_tune_run.json").read_text().replace("filter_prune", "filter_prune ")
        )),
    ]:  # fmt: skip
        copy = tmp_path / f"sent-{name}"
        shutil.copytree(exp, copy)
        alter(copy)
        proc = run_cli("--resume", str(copy), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert name in proc.stderr and "--trust-folder" in proc.stderr and "Traceback" not in proc.stderr
        assert not marker.exists()
    moved = tmp_path / "moved"
    shutil.copytree(exp, moved)
    from edge_tune.trust import check_folder

    check_folder(moved)  # found by content: a moved folder is still this user's


class _Exploit:
    """Unpickling this creates a file: what a hostile folder could do with any command."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_before_the_search_exits_with_its_code(tmp_path, sig, code):
    """While the baseline trains (no Ray yet) either signal ends the run at once: 128 + its number, no traceback."""
    cmd = [sys.executable, "-m", "edge_tune.run", "--space", "filter_prune", "--smoke", "--cache-dir",
           str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    while proc.poll() is None and "training" not in seen:
        seen += proc.stdout.readline()
    proc.send_signal(sig)
    out = seen + proc.communicate(timeout=120)[0]
    assert proc.returncode == code, out[-2000:]
    assert "edge-tune: interrupted" in out and "Traceback" not in out
