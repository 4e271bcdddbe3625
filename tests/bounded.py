"""Turning a hang into a failure: every input test runs its command under a deadline.

Subprocesses get ``timeout=``; code run in the test process runs inside :func:`within`, which
interrupts it with SIGALRM (a blocking ``open`` of a FIFO or a ``read`` is interrupted too). The
deadlines are generous: they say "this must end", not how fast; no test asserts a duration.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

#: Seconds a command given a hostile input has to give up (it needs a fraction of one).
DEADLINE = 60


class Hung(BaseException):
    """Raised into a test that outran its deadline; a BaseException so no handler eats it."""


@contextlib.contextmanager
def within(seconds: float = DEADLINE) -> Iterator[None]:
    """Fail the block with :class:`Hung` if it runs longer than ``seconds`` (main thread only)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"still running after {seconds} s: the input made it hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
