"""Soak: a 40-trial search at 2 trials at once, with faults injected at random moments.

    python benchmarks/soak.py [--trials 40] [--seed 0]   # writes docs/benchmarks/soak.md and .json

While the real CLI searches ``filter_prune`` (1 fine-tuning epoch a trial, on
a 4-epoch baseline), a killer sends SIGKILL, in a random order and at random
moments 15-45 s apart, to the device actor's process three times, to a
running trial's worker three times and to the driver once; after the
driver's death the search is continued with ``--resume`` (the remaining kills
go on in the resumed run). At the end it checks what the run promises: the
run finishes; every trial appears once in ``results.csv`` (errored ones
marked ``error``) and has one trial folder; no trial reported a final result
twice; and the searcher's saved state holds an observation for every trial
that finished. Processes are found by their Ray titles (``ray::EdgeDevice``,
``ray::ImplicitFunc``). The run joins a one-machine cluster of 3 logical
CPUs (``ray_cluster``), so that 2 trials run at once beside the device.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks"
# The soak's cluster, for it and its drivers: on loopback only, as a local run is, and without token
# authentication (nothing but this machine's own processes can reach it).
LOCAL_CLUSTER = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def titled(title: str) -> list[int]:
    """Processes of this machine whose command line (Ray sets it to the actor's title) holds ``title``."""
    out = []
    for p in (int(d.name) for d in Path("/proc").glob("[0-9]*")):
        try:
            if title in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                out.append(p)
        except OSError:
            pass
    return out


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    # The driver joins the loopback-only cluster at 127.0.0.1, so it too must take 127.0.0.1 for its node's
    # address: Ray would otherwise turn that address into the machine's outward one, where nothing listens.
    env = {**os.environ, **LOCAL_CLUSTER}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT)


def wait_searching(proc: subprocess.Popen, log: Path, runs: int) -> None:
    """Until the ``runs``-th run logged into ``log`` has started its search (its baseline is measured)."""
    while log.read_text(errors="replace").count("searching filter_prune") < runs and proc.poll() is None:
        time.sleep(1)


def ray_cluster(cpus: int) -> str:
    """A one-machine Ray cluster with ``cpus`` logical CPUs and the edge device, on loopback; its address.

    A run that starts Ray itself gives it the machine's cores (2 here), and one of them goes to the
    device: one trial at a time. Joining a cluster that declares 3 CPUs lets 2 trials run at once beside
    the device (oversubscribed on 2 cores, which a soak does not mind), and the cluster outlives a
    killed driver, as a real one does.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, **LOCAL_CLUSTER}
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--num-cpus={cpus}",
                    '--resources={"edge_device": 1}', "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    return f"127.0.0.1:{port}"


def soak(trials: int, seed: int, work: Path, address: str) -> dict:
    rng = random.Random(seed)
    exp, log = work / "out" / "soak", work / "soak.log"
    cmd = [sys.executable, "-m", "edge_tune.run", "--space", "filter_prune", "--num-samples", str(trials),
           "--max-concurrent", "2", "--epochs", "1", "--truncate-lr", "--baseline-epochs", "4",
           "--cache-dir", str(work / "cache"), "--output-dir", str(work / "out"), "--name", "soak", "--wandb", "off",
           "--seed", str(seed), "--address", address]  # fmt: skip
    plan = ["device"] * 3 + ["trial"] * 3 + ["driver"]
    rng.shuffle(plan)
    kills: list[dict] = []
    exits: list[int] = []
    began, runs, driver_killed = time.time(), 1, False
    proc = start(cmd, log)
    wait_searching(proc, log, runs)
    while True:
        wait_until = time.time() + rng.uniform(15, 45)
        while time.time() < wait_until and proc.poll() is None:
            time.sleep(0.5)
        if proc.poll() is not None:
            exits.append(proc.returncode)
            if driver_killed:  # go on from the folder, as a user would
                driver_killed, runs = False, runs + 1
                proc = start([sys.executable, "-m", "edge_tune.run", "--resume", str(exp)], log)
                wait_searching(proc, log, runs)
                continue
            break
        if not plan:
            continue
        what = plan[0]
        title = {"device": "ray::EdgeDevice", "trial": "ray::ImplicitFunc"}.get(what, "")
        pid = proc.pid if what == "driver" else next(iter(titled(title)), None)
        if pid is None:
            continue  # nothing of that kind running now: try at the next moment
        plan.pop(0)
        os.kill(pid, signal.SIGKILL)
        kills.append({"what": what, "pid": pid, "at_s": round(time.time() - began, 1)})
        driver_killed = what == "driver"
    print(log.read_text(errors="replace")[-4000:])  # the end of the runs' own output, for the record
    return check(exp, trials) | {
        "kills": kills,
        "kills_not_done": plan,
        "exit_codes": exits,
        "wall_s": round(time.time() - began, 1),
        "trials_asked": trials,
        "runs": runs,
    }


def check(exp: Path, trials: int) -> dict:
    rows = list(csv.DictReader(open(exp / "results.csv"))) if (exp / "results.csv").is_file() else []
    ids = [r["trial_id"] for r in rows]
    folders = [p for p in exp.glob("run_trial_*") if p.is_dir()]
    finals = {
        p.name: sum('"final": true' in line for line in (p / "result.json").read_text().splitlines())
        for p in folders
        if (p / "result.json").is_file()
    }
    states = sorted(exp.glob("searcher-state-*.json"))
    observations = len(json.loads(states[-1].read_text())["observations"]) if states else 0
    statuses = [r["status"] for r in rows]
    return {
        "rows": len(rows),
        "unique_trial_ids": len(set(ids)),
        "trial_folders": len(folders),
        "ok": statuses.count("ok"),
        "error": statuses.count("error"),
        "stopped": statuses.count("stopped"),
        "trials_with_two_finals": sum(v > 1 for v in finals.values()),
        "finished_trials": sum(v == 1 for v in finals.values()),
        "searcher_observations": observations,
        "errors": sorted({r["error"][:120] for r in rows if r["status"] == "error"}),
    }


def write(result: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(result, indent=2))
    kills = ", ".join(f"{k['what']} at {k['at_s']:.0f} s" for k in result["kills"])
    holds = (
        result["rows"] == result["unique_trial_ids"] == result["trial_folders"] == result["trials_asked"]
        and result["trials_with_two_finals"] == 0
        and result["searcher_observations"] == result["finished_trials"]
    )
    lines = [
        "# Soak: 40 trials, 2 at a time, with the device, trials and the driver killed",
        "",
        "`python benchmarks/soak.py` (filter_prune, 1 fine-tuning epoch a trial, 4-epoch baseline, this machine's "
        "2 cores).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| trials asked | {result['trials_asked']} |",
        f"| cluster joined | {result['cluster']} |",
        f"| kills (SIGKILL) | {kills} |",
        f"| kills planned but not done (nothing of that kind running) | {result['kills_not_done'] or 'none'} |",
        f"| runs (the first, then each --resume) / their exit codes | {result['runs']} / {result['exit_codes']} |",
        f"| wall time | {result['wall_s'] / 60:.1f} min |",
        f"| rows in results.csv / distinct trial ids / trial folders | {result['rows']} / "
        f"{result['unique_trial_ids']} / {result['trial_folders']} |",
        f"| ok / error / stopped | {result['ok']} / {result['error']} / {result['stopped']} |",
        f"| trials that reported a final result twice | {result['trials_with_two_finals']} |",
        f"| finished trials / observations in the searcher's state | {result['finished_trials']} / "
        f"{result['searcher_observations']} |",
        f"| every promise held | {'yes' if holds else 'no'} |",
        "",
        "Errors of the errored trials:",
        "",
        *[f"- `{e}`" for e in result["errors"]],
        "",
    ]
    (OUT / "soak.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    address = ray_cluster(cpus=3)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write(
                soak(args.trials, args.seed, Path(tmp), address) | {"cluster": f"ray start --head, 3 CPUs, {address}"}
            )
    finally:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop"], check=False, capture_output=True)


if __name__ == "__main__":
    main()
