"""Error types that carry user-facing diagnostics.

Every error the toolkit raises on purpose derives from :class:`Error`. The CLI turns one into a
single line on stderr and a non-zero exit; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error the toolkit raises on purpose."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1

    def diagnostics(self) -> str:
        """One line for a human: what was wrong and how to fix it."""
        return str(self)


class UsageError(Error):
    """A command-line value or input file is invalid; the message names it and the fix."""

    exit_code = 2


class VerificationError(Error):
    """A quote, certificate or its collateral failed a check; the message names the check."""

    exit_code = 1


class EnvironmentMissing(Error):
    """Something the requested mode needs (Gramine, an SGX device, ...) is not on this machine."""

    exit_code = 3
