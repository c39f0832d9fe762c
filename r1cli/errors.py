"""User errors: one clear line on stderr and exit status 2, never a traceback (unless --debug)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a record, an option. The message is the whole report."""


EXIT_USER_ERROR = 2
