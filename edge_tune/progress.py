"""What a person sees while a run goes: log lines, the device's progress bar, the status line."""

from __future__ import annotations

import math
import time
from typing import Any

from edge_tune.device import DeviceConfig
from edge_tune.outcome import TrialOutcome

__all__ = ["await_device", "log", "progress_callback"]


def log(msg: str) -> None:
    print(f"[edge_tune] {msg}", flush=True)


def await_device(ref: Any, what: str, device: DeviceConfig, quiet: bool, every_s: float = 5.0) -> Any:
    """``ray.get(ref)``, with a progress bar every ``every_s`` seconds once the device job takes longer.

    The bar runs against the timing plan's cap: timing stops there at the
    latest, or earlier once the speed-up's confidence interval is narrow.
    """
    import ray

    start, shown = time.perf_counter(), 0
    cap = device.timing.time_cap_s
    while not ray.wait([ref], timeout=0.5)[0]:
        elapsed = time.perf_counter() - start
        if not quiet and elapsed >= every_s * (shown + 1):
            shown += 1
            log(
                f"  {what} [{'#' * round(20 * min(elapsed / cap, 1.0)):20}] {elapsed:.0f}s; timing stops by "
                f"{cap:.0f}s, or once the speed-up's 95% CI is within {100 * device.timing.target_ci:g}%"
            )
    return ray.get(ref)


def progress_callback(
    total: int, device_actor: str, quiet: bool, every_s: float = 15.0, confirming: bool = False
) -> Any:
    import ray
    from ray.tune import Callback

    from edge_tune.device import get_device

    class Progress(Callback):
        """A line per finished trial and, every ``every_s`` seconds when it changed, a status line: trials
        done, running and queued, the device's queue and the best feasible speed-up so far (``confirming``:
        of one fine-tune, which confirmation may not keep). Tune's own tables are off. ``quiet``: none of
        it."""

        def __init__(self) -> None:
            self.done = 0
            self.best: tuple[float, str] | None = None
            self.last, self.line = 0.0, ""
            self.queue: int | None = None
            self.job = ""  # what the device is doing, when a benchmark or evaluation has run for a while
            self.queue_ref: Any = None
            self.counted = False

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if not self.counted:  # a resumed run counts on from the trials it kept
                self.counted, self.done = True, sum(t.status in ("TERMINATED", "ERROR") for t in trials)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.monotonic()
            if quiet or now - self.last < every_s:
                return
            self.last = now
            if self.queue_ref is not None and ray.wait([self.queue_ref], timeout=0)[0]:
                state, self.queue_ref = ray.get(self.queue_ref), None
                self.queue = state["queue_length"]
                slow = state.get("job") and state.get("job_seconds", 0) >= 5
                self.job = f" (running a {state['job']} for {state['job_seconds']:.0f}s)" if slow else ""
            if self.queue_ref is None:  # asked now, read at a later step: the driver never waits on the device
                self.queue_ref = get_device(device_actor).info.remote()
            running = sum(t.status == "RUNNING" for t in trials)
            queued = total - len(trials) + sum(t.status == "PENDING" for t in trials)
            best = f"{self.best[0]:.3f}x ({self.best[1]})" if self.best else "none yet"
            if confirming and self.best:
                best += "; one fine-tune: confirmation names the pick"
            line = (
                f"status: {self.done}/{total} trials done, {running} running, {queued} queued; device queue "
                f"{'?' if self.queue is None else self.queue}{self.job}; best feasible speedup {best}"
            )
            if line != self.line:
                self.line = line
                log(line)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            o = TrialOutcome.from_dict(trial.last_result)
            if o.final and o.feasible and (self.best is None or o.speedup > self.best[0]):
                self.best = (o.speedup, trial.trial_id)
            if quiet:
                return
            if not o.final:
                log(
                    f"trial {self.done}/{total} {trial.trial_id}: stopped early after epoch {o.epoch}, "
                    f"top1 {o.top1:.2f}%"
                )
                return
            kinds = ", ".join(f"{k} {v.get('speedup', math.nan):.3f}x" for k, v in o.kinds.items())
            each = f" ({kinds})" if kinds else ""  # --also-device: each kind's own
            log(
                f"trial {self.done}/{total} {trial.trial_id}: speedup {o.speedup:.3f}x{each}, "
                f"top1 {o.top1:.2f}% (device {o.top1_device:.2f}%), {'feasible' if o.feasible else 'infeasible'}; "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
            )

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            log(f"trial {self.done}/{total} {trial.trial_id}: errored, the search goes on ({trial.error_file})")

    return Progress()
