"""mse-run's exit status when the enclave dies by a signal or mse-run is interrupted.

Real signals to real processes: the simulated enclave is a plain child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.net import free_port
from tests.processes import stop_process

from .conftest import make_tar, run_args

# The app kills its own interpreter while being imported: the enclave dies by SIGKILL.
KILLED = """\
import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
"""

# The app says it is being imported, then takes its time: mse-run is interrupted before ready.
SLOW = """\
import os
import pathlib
import time

pathlib.Path(os.environ["MSE_TEST_STARTED"]).write_text("importing")
time.sleep(120)
app = None
"""


def _args(tar: Path, workdir: Path) -> list[str]:
    return [*run_args(tar, workdir, **{"--port": str(free_port())}), "--simulation"]


def test_enclave_killed_by_a_signal_exits_128_plus_n(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": KILLED})
    result = subprocess.run(
        _args(tar, tmp_path / "wd"), capture_output=True, text=True, env=env, timeout=120
    )
    # As a shell reports it; Popen's -9 passed to sys.exit would give 247.
    assert result.returncode == 128 + signal.SIGKILL, result.stderr
    assert "RA-TLS check passed" not in result.stderr
    assert not (tmp_path / "wd").exists()


def _interrupt_while_importing(
    tmp_path: Path, env: dict[str, str], signum: signal.Signals
) -> subprocess.CompletedProcess[str]:
    tar = make_tar(tmp_path / "app.tar", {"app.py": SLOW})
    started = tmp_path / "started"
    proc = subprocess.Popen(
        _args(tar, tmp_path / "wd"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "MSE_TEST_STARTED": str(started)},
    )
    try:
        # The enclave is running (and mse-run supervising it) once the app is being imported.
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the app was never imported"
            time.sleep(0.05)
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_before_ready_exits_130(tmp_path: Path, env: dict[str, str]) -> None:
    result = _interrupt_while_importing(tmp_path, env, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "RA-TLS check passed" not in result.stderr
    # It never served: its work directory goes, as for any start that failed.
    assert not (tmp_path / "wd").exists()


def test_sigterm_before_ready_exits_143(tmp_path: Path, env: dict[str, str]) -> None:
    result = _interrupt_while_importing(tmp_path, env, signal.SIGTERM)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert not (tmp_path / "wd").exists()
