"""A killed ``mse-run --direct`` takes Gramine's loader, and so the enclave, with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.net import answers, free_port
from tests.processes import alive, descendants, kill_if_alive, stop_process

from .test_direct import mse_run, pack
from .test_provision_direct import APP, SECRET, _curl, _push, _start, _wait_for

# How long the enclave may outlive a killed mse-run: the kernel signals it as mse-run exits.
_BOUND = 10.0


def test_a_killed_mse_run_takes_gramine_with_it(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"API_KEY": SECRET}))
    port = free_port()
    args = mse_run(bin_dir, tar, tmp_path / "wd", "--provision", "push", port=port)
    started: list[subprocess.Popen[str]] = []
    enclave: list[int] = []
    try:
        proc, mrenclave, err = _start(args, tmp_path, env, started)
        pushed = _push(bin_dir, port, mrenclave, env, "--secrets", str(secrets))
        assert pushed.returncode == 0, pushed.stderr
        _wait_for(err, "serving https://", proc)
        assert _curl(port, tmp_path / "wd" / "cert.pem", "/secret/API_KEY") == SECRET
        # Gramine's loader (gramine-direct execs it), and whatever it may have started.
        enclave = descendants(proc.pid)
        assert enclave, "no enclave process under mse-run"

        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + _BOUND
        while (any(map(alive, enclave)) or answers(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in enclave if alive(pid)]
        assert not survivors, f"outlived mse-run by {_BOUND:.0f} s: {survivors}"
        assert not answers(port), "the port still answers"
    finally:
        for proc in started:
            stop_process(proc)
        for pid in enclave:
            kill_if_alive(pid)
