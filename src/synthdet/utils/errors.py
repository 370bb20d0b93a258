"""The exception for user mistakes that fit no built-in type; the CLI prints it as one line."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (a file, a value, an option combination).

    The message names the file or option and the problem; ``synthdet`` prints it on one line
    and exits 1 (a traceback only with ``-v``).
    """
