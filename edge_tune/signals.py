"""SIGINT and SIGTERM end a run the same graceful way.

While the Tuner runs, the first signal asks Tune to stop: running trials are
stopped, and the experiment state, with the searcher and every finished
trial's observation, is saved one last time; the run then prints the
``--resume`` command and exits with 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM). Tune handles SIGINT itself; SIGTERM is routed to
the same stop (Tune's SIGUSR1 handler), because Ray's own SIGTERM handler
exits at once and the core worker then dies with a native stack dump.
Outside the Tuner (checks, baseline training, the final report) a signal
raises ``KeyboardInterrupt``, and the CLI exits with the same code. A second
signal while the search is stopping quits at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["exit_code", "install", "received", "tuning"]

_received: int | None = None
_tuning = False


def received() -> int | None:
    """The signal that asked the run to stop, if any (SIGINT while Tune runs is Tune's, and not seen here)."""
    return _received


def exit_code() -> int:
    """128 + the signal's number: 130 for SIGINT (also when Tune caught it), 143 for SIGTERM."""
    return 128 + (_received or signal.SIGINT)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    first = _received is None
    _received = signum
    tune_stop = signal.getsignal(signal.SIGUSR1)
    if first and _tuning and callable(tune_stop):
        print(
            f"[edge_tune] {signal.Signals(signum).name} received: stopping the trials and saving the search "
            "(send it again to quit at once)",
            flush=True,
        )
        tune_stop(signum, frame)
        return
    raise KeyboardInterrupt


def install(fresh: bool = False) -> None:
    """Route SIGINT and SIGTERM here (``fresh``: forget an earlier signal, for a new run in this process).
    Call it again after ``ray.init``, which installs a SIGTERM handler of its own."""
    global _received
    if fresh:
        _received = None
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; a run in a thread is stopped by its owner
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def tuning() -> Iterator[None]:
    """While the Tuner runs: a signal stops it gracefully instead of raising."""
    global _tuning
    _tuning = True
    try:
        yield
    finally:
        _tuning = False
