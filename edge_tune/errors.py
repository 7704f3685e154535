"""The one exception type that means "the user asked for something wrong"."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in the user's input: a flag, a file or a key.

    The CLI prints the message as one paragraph, without a traceback, and
    exits with code 2. The message names the flag, file or key at fault and,
    where there is a finite set of valid choices, lists them.
    """
