"""Errors of the user's making, and the one way a stage reports them.

A :class:`UserError` is bad input the user can fix (a param out of range, a missing or
malformed file, a dataset too small for the shots asked). A stage run through
:func:`run_stage` prints its message as one line, ``<file or param>: <entry>: <what is
wrong>``, and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad params or input data; the message names the file or key and the entry."""


def run_stage(main: Callable[..., object], *args: object) -> None:
    """Call a stage's ``main``; a :class:`UserError` becomes one line on stderr, exit 2."""
    try:
        main(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
