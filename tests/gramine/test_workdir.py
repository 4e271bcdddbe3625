"""Paths given relative to where mse-run is started work with real Gramine too."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .test_direct import mse_run, pack


def test_a_relative_workdir_signs(dev_bin: Path, tmp_path: Path, env: dict[str, str]) -> None:
    tar = pack(
        {"app.py": b"def app(environ, start_response):\n    return []\n"}, tmp_path / "a.tar"
    )
    # gramine-sgx-sign runs inside the work directory: the key path must not be relative to it.
    result = subprocess.run(
        [*mse_run(dev_bin, tar, Path("relative-wd")), "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MRENCLAVE: ")
