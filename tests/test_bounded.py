"""The deadline the input tests rely on does turn a hang into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bounded import Hung, within


def test_a_blocking_open_is_interrupted(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Opening a FIFO for writing waits for a reader that never comes.
    with pytest.raises(Hung), within(0.5):
        os.open(fifo, os.O_WRONLY)
