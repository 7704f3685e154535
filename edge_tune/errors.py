"""The one exception type that means "the user asked for something wrong"."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["UserError", "exit_code"]


class UserError(Exception):
    """A mistake in the user's input: a flag, a file or a key.

    The CLI prints the message as one paragraph, without a traceback, and
    exits with code 2. The message names the flag, file or key at fault and,
    where there is a finite set of valid choices, lists them.
    """


def exit_code(prog: str, command: Callable[[], object]) -> int:
    """Run a command-line tool's body: 0 when it returns, 2 with its message on a ``UserError``."""
    try:
        command()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
