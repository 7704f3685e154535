"""Errored trials stay errored: a record of them in the experiment folder, which ``--resume`` honours.

Ray Tune keeps an errored trial as it is on resume (``resume_errored=False``),
but only if its saved experiment state already says so; the state saved just
before a driver was killed can still call it running, and Tune then runs it
again. So the driver notes each errored trial (its id and the last line of
its error) in ``errored_trials.json`` the moment Tune reports the error, and
a trial that finds itself there raises at once: it is kept, marked errored,
with its first error, and its fine-tune is not run twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_tune.files import write_atomically

__all__ = ["ERRORED_FILE", "earlier_error", "errored_callback", "record_error"]

ERRORED_FILE = "errored_trials.json"


def _read(folder: Path) -> dict[str, str]:
    try:
        found = json.loads((folder / ERRORED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def record_error(folder: Path, trial_id: str, reason: str) -> None:
    """Add ``trial_id`` with ``reason`` to the folder's record (written whole, then renamed into place)."""
    errored = _read(folder) | {trial_id: reason}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / ERRORED_FILE, lambda tmp: tmp.write_text(json.dumps(errored, indent=1)))


def earlier_error(folder: Path, trial_id: str) -> str | None:
    """The error ``trial_id`` had in an earlier run of the experiment in ``folder``, if any."""
    return _read(folder).get(trial_id)


def _last_line(path: str | None) -> str:
    """The last line of a trial's error file (the exception), or a word when there is none to read."""
    try:
        lines = Path(path).read_text().strip().splitlines() if path else []
    except OSError:
        lines = []
    return lines[-1] if lines else "errored"


def errored_callback() -> Any:
    """A Tune callback that records each errored trial in its experiment folder as Tune reports it."""
    from ray.tune import Callback

    class RecordErrors(Callback):
        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            record_error(Path(trial.path).parent, trial.trial_id, _last_line(trial.error_file))

    return RecordErrors()
