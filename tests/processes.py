"""Stopping the mse-run processes a test started without leaving an enclave behind."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM first (mse-run passes it to the enclave), SIGKILL only if that does not end it.

    A SIGKILL alone ends mse-run but leaves the enclave process (the bootstrap, or Gramine's
    loader) running on its own, still holding the port.
    """
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
