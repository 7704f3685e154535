"""Files that are never read half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a file beside ``path``, then rename it there: a reader sees the old file or the new one,
    never a half-written one (a cache entry, a record another run reads)."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
