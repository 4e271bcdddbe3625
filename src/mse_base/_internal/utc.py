"""The one text form of a UTC instant used in messages, collateral and caches."""

from __future__ import annotations

import datetime as dt

# Intel's collateral uses this form ("issueDate", "nextUpdate"); messages follow it.
ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: dt.datetime) -> str:
    """``moment`` in UTC as ``2025-09-01T00:00:00Z``."""
    return moment.astimezone(dt.timezone.utc).strftime(ISO_SECONDS)
