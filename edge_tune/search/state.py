"""A searcher's saved state as JSON: data, never code, so resuming a folder someone sent runs nothing from it.

Tune saves a searcher with ``save(path)`` and restores it with ``restore(path)``,
the newest file named by the class's ``CKPT_FILE_TMPL`` in the experiment
folder. Ray's built-in searchers pickle themselves there; ``JsonState`` makes
ours write ``searcher-state-*.json`` instead, from ``state()`` and back with
``load_state``. numpy values are written as plain numbers and lists; random
states as their parts (``rng_state``), so the resumed search draws on from
where it stopped. A file that is not such a JSON object is a ``ValueError``
naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["JsonState", "rng_state", "set_rng_state"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not saved in a searcher's state")


def rng_state(rng: np.random.RandomState | np.random.Generator) -> Any:
    """A legacy ``RandomState``'s tuple as a list (the key array as ints); a ``Generator``'s state dict as is."""
    if isinstance(rng, np.random.Generator):
        return rng.bit_generator.state
    name, keys, pos, has_gauss, cached = rng.get_state(legacy=True)
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def set_rng_state(rng: np.random.RandomState | np.random.Generator, saved: Any) -> None:
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = saved
        return
    name, keys, pos, has_gauss, cached = saved
    rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class JsonState:
    """Mixed into a Tune ``Searcher``: ``save``/``restore`` through ``state()`` and ``load_state(state)``."""

    CKPT_FILE_TMPL = "searcher-state-{}.json"

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.state(), default=_plain))

    def restore(self, checkpoint_path: str) -> None:
        try:
            state = json.loads(Path(checkpoint_path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{checkpoint_path}: not a saved searcher state ({exc})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{checkpoint_path}: not a saved searcher state (a JSON object)")
        self.load_state(state)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """The newest state Tune saved in ``checkpoint_dir``. A folder from before JSON state holds only a
        pickle, which is never read: the searcher then starts again without observations, and says so."""
        if not list(Path(checkpoint_dir).glob(self.CKPT_FILE_TMPL.format("*"))):
            print(
                f"[edge_tune] {checkpoint_dir} holds no searcher state saved as JSON (an older edge_tune pickled "
                "it, and pickles are not read): the searcher starts without the earlier observations",
                flush=True,
            )
            return
        super().restore_from_dir(checkpoint_dir)  # type: ignore[misc]  # Tune's Searcher, mixed in after
