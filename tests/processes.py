"""Stopping the mse-run processes a test started without leaving an enclave behind, and
looking at the processes it started indirectly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM first (mse-run passes it to the enclave), SIGKILL only if that does not end it.

    A SIGKILL alone would end mse-run without its cleanup: the kernel then kills the enclave
    process (the bootstrap, or Gramine's loader), and a simulated one leaves its memory (``tls/``)
    in the work directory for the next run to remove (tests/provision/test_crash.py).
    """
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return stat.rpartition(")")[2].split()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the kernel here has no /proc/PID/task/*/children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """The processes under ``pid``: its children, theirs, and so on."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie has ended, whoever has yet to reap it."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def kill_if_alive(pid: int) -> None:
    """SIGKILL a process a test started indirectly (an orphaned enclave), if it still runs."""
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
