"""What ``--resume`` may unpickle: only files that edge_tune wrote, for this user.

Resuming hands Ray Tune the experiment folder, and Tune unpickles what it
finds there: ``tuner.pkl``, its experiment and search-generator state (pickles
under ``.json`` names), callback state and each errored trial's
``error.pkl``. Unpickling runs code, so a folder someone sent you could run
theirs. Our own searchers save JSON (``search/state.py``); Ray's pickles
cannot be avoided, so they are vouched for instead.

While a run goes, ``Ledger`` records the SHA-256 of every such file as it
is written (Tune writes them in a staging folder and copies them into the
experiment folder; both are read), in a record kept outside the folder:
``$XDG_CACHE_HOME/edge_tune/trusted/`` (``~/.cache/edge_tune/trusted``),
one JSON file per experiment, named by the digest of the folder's
``edge_tune_run.json``, which holds the command line ``--resume`` replays.
The last ``KEEP`` digests of each file are kept: Tune rewrites its state
about once a second and copies it a moment later. ``check_folder`` then
refuses a folder whose run file has no record, or one of whose pickles has
a digest the record does not hold, unless ``--trust-folder`` is given. A
moved or renamed folder still resumes: the record is found by content.
The record lives where the user's cache is, never where ``--cache-dir``
(read from the folder itself) points.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from edge_tune.config import RUN_FILE
from edge_tune.errors import UserError
from edge_tune.files import write_atomically

__all__ = ["KEEP", "Ledger", "check_folder", "ledger_callback", "trust_dir"]

KEEP = 32
_DEEP_EVERY_S = 1.0  # trial folders (error.pkl, params.pkl) are scanned this often; the top level every step


def trust_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge_tune" / "trusted"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_ray_state(path: Path) -> bool:
    """A file Tune unpickles on resume: any ``.pkl``, and its ``*state-*.json`` files (pickles inside)."""
    return path.suffix == ".pkl" or (path.suffix == ".json" and "state-" in path.name)


def pickles(root: Path, deep: bool = True) -> list[Path]:
    """Ray's state files in ``root`` and, if ``deep``, one level down (the trial folders)."""
    found = [p for p in root.iterdir() if p.is_file() and _is_ray_state(p)] if root.is_dir() else []
    if deep and root.is_dir():
        found += [p for p in root.glob("*/*.pkl") if p.is_file()]
    return sorted(found)


def _record_path(folder: Path) -> Path | None:
    run_file = folder / RUN_FILE
    return trust_dir() / f"{_digest(run_file)}.json" if run_file.is_file() else None


class Ledger:
    """Records the digests of the Ray state files of the experiment in ``folder`` as they change."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[Path, tuple[int, int]] = {}  # file -> (mtime_ns, size) when last hashed
        self.files: dict[str, list[str]] = {}
        self.record: Path | None = None

    def update(self, root: Path, deep: bool = True) -> None:
        """Hash what changed under ``root`` (the folder, or Tune's staging copy of it) since last seen."""
        if self.record is None:
            self.record = _record_path(self.folder)
            if self.record is None:
                return  # the run file is written before the first trial
            if self.record.is_file():  # a resumed run adds to what the first one recorded
                self.files = json.loads(self.record.read_text()).get("files", {})
        changed = False
        for path in pickles(root, deep):
            try:
                stat = path.stat()
                key = (stat.st_mtime_ns, stat.st_size)
                if self.seen.get(path) == key:
                    continue
                digest = _digest(path)
            except OSError:  # replaced while being read: the next step sees the new one
                continue
            self.seen[path] = key
            digests = self.files.setdefault(path.relative_to(root).as_posix(), [])
            if digest not in digests:
                digests[:] = [*digests, digest][-KEEP:]
                changed = True
        if changed:
            self._write()

    def _write(self) -> None:
        assert self.record is not None
        self.record.parent.mkdir(parents=True, exist_ok=True)
        body = {"folder": str(self.folder), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": self.files}
        write_atomically(self.record, lambda tmp: tmp.write_text(json.dumps(body, indent=1)))


def ledger_callback() -> Any:
    """A Tune callback keeping a ``Ledger`` of the experiment folder (and of Tune's staging copy of it) up to
    date. The folder is the one Tune writes now, read from the trials: a resumed run may have been moved."""
    from ray.tune import Callback

    class Vouch(Callback):
        def __init__(self) -> None:
            self.ledger: Ledger | None = None
            self.deep_at = 0.0

        def _update(self, trials: list, deep: bool) -> None:
            if not trials:
                return
            storage = trials[0].storage
            folder = Path(storage.experiment_fs_path)
            if self.ledger is None or self.ledger.folder != folder:
                self.ledger = Ledger(folder)
            for root in (Path(storage.experiment_driver_staging_path), folder):
                self.ledger.update(root, deep)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.monotonic()
            deep = now - self.deep_at >= _DEEP_EVERY_S
            if deep:
                self.deep_at = now
            self._update(trials, deep)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._update(trials, deep=True)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._update(trials, deep=True)

    return Vouch()


def check_folder(folder: Path) -> None:
    """Exit 2 (``UserError``) unless every file ``--resume`` would unpickle in ``folder`` is one this user's
    run of edge_tune wrote."""
    override = "if you trust whoever made this folder, add --trust-folder"
    record = _record_path(folder)
    if record is None or not record.is_file():
        raise UserError(
            f"--resume {folder}: {folder / RUN_FILE} was not written by edge_tune for this user (no record of it "
            f"in {trust_dir()}). Resuming unpickles Ray's files in the folder, which can run code; {override}"
        )
    try:
        files = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        files = {}
    for path in pickles(folder):
        name = path.relative_to(folder).as_posix()
        if _digest(path) not in files.get(name, []):
            raise UserError(
                f"--resume {folder}: {path} is not a file this user's run wrote (its SHA-256 is not in {record}). "
                f"Resuming would unpickle it, which can run code; {override}"
            )
