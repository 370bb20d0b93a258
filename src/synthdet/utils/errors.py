"""The exception for user mistakes that fit no built-in type; the CLI prints it as one line."""

from __future__ import annotations

from typing import Sequence


class UserError(Exception):
    """A mistake in what the user gave (a file, a value, an option combination).

    The message names the file or option and the problem; ``synthdet`` prints it on one line
    and exits 1 (a traceback only with ``-v``). ``details``: further lines printed under it, one
    per item (e.g. the first few bad files of a dataset, ``<file>: <problem>`` each).
    """

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(str(d) for d in details)
