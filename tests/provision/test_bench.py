"""The provisioning benchmark runs end to end (its rate is printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "provision_bench.py"


def test_benchmark_runs_and_every_pull_is_verified(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--enclaves", "4", "--requests", "8", "--clients", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified pulls: 8 in" in proc.stdout
    assert "failed: 0" in proc.stdout
