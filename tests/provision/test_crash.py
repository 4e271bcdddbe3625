"""Crashes under simulation: a killed mse-run takes its enclave with it, and the enclave
memory (``tls/``) a crash leaves in the clear is removed by the next run on the directory.

Each test kills real processes with SIGKILL, which no handler sees: the killed process gets no
chance to stop anything or clean up, as in an OOM kill or ``kill -9``. A run on a work directory
that a live enclave uses is refused and touches nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mse_base._internal.enclave.manifest import SEALED_STATE_NAME
from tests.net import answers
from tests.processes import alive, children, kill_if_alive

from .conftest import SECRET, Enclave, https_get, read, run_args, start_enclave, stop_process

# How long a killed mse-run's enclave may outlive it: the kernel signals it as mse-run exits.
_BOUND = 10.0


def _provisioned(enclave: Enclave, secrets_file: Path, *extra: str) -> int:
    """Push, wait until the app serves the secret; the enclave process's pid."""
    pushed = enclave.push("--secrets", str(secrets_file), *extra)
    assert pushed.returncode == 0, pushed.stderr
    enclave.wait_for("serving https://")
    assert https_get(enclave.port, enclave.workdir / "cert.pem", "/secret/API_KEY") == (
        "200",
        SECRET,
    )
    [child] = children(enclave.proc.pid)
    return child


def _kill_mse_run(enclave: Enclave) -> None:
    os.kill(enclave.proc.pid, signal.SIGKILL)
    assert enclave.proc.wait(timeout=30) == -signal.SIGKILL


def test_a_killed_mse_run_takes_its_enclave_with_it(enclave: Enclave, secrets_file: Path) -> None:
    child = _provisioned(enclave, secrets_file)
    _kill_mse_run(enclave)
    try:
        deadline = time.monotonic() + _BOUND
        while (alive(child) or answers(enclave.port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), f"the enclave (pid {child}) outlived mse-run by {_BOUND:.0f} s"
        assert not answers(enclave.port), "the port still answers"
    finally:
        kill_if_alive(child)


def test_mse_run_removes_the_memory_of_an_enclave_killed_under_it(
    enclave: Enclave, secrets_file: Path
) -> None:
    child = _provisioned(enclave, secrets_file)
    os.kill(child, signal.SIGKILL)
    assert enclave.proc.wait(timeout=30) == 128 + signal.SIGKILL
    assert not (enclave.workdir / "tls").exists(), "the killed enclave's memory was left behind"


@pytest.fixture
def sealed_file(tmp_path: Path) -> Path:
    path = tmp_path / "sealed.json"
    path.write_text(json.dumps({"SEALED": "sealed-6b1f"}))
    return path


def _crash(enclave: Enclave, secrets_file: Path, sealed_file: Path) -> dict[Path, bytes]:
    """Provision with sealed secrets, then SIGKILL mse-run and its enclave alike.

    Returns the sealed state (every file outside the enclave memory ``tls/``) as it was.
    """
    child = _provisioned(enclave, secrets_file, "--sealed-secrets", str(sealed_file))
    _kill_mse_run(enclave)
    kill_if_alive(child)  # the fix kills it already; this is the crash without the fix
    deadline = time.monotonic() + _BOUND
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    memory = enclave.workdir / "tls"
    # The crash left the enclave memory in the clear: the provisioned secret is there.
    assert SECRET.encode() in (memory / "secrets.json").read_bytes()
    sealed = {
        path: path.read_bytes()
        for path in enclave.workdir.rglob("*")
        if path.is_file() and memory not in path.parents
    }
    assert enclave.workdir / "secrets" / SEALED_STATE_NAME in sealed
    return sealed


def _removal_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "by a run that crashed" in line]


@pytest.mark.parametrize("refused", ["not empty", "missing code"])
def test_any_run_on_the_work_directory_first_removes_a_crashed_enclave_memory(
    enclave: Enclave,
    secrets_file: Path,
    sealed_file: Path,
    env: dict[str, str],
    app_tar: Path,
    refused: str,
) -> None:
    sealed = _crash(enclave, secrets_file, sealed_file)
    memory = enclave.workdir / "tls"
    # Runs refused at once, the work directory named: a dry run without --force (refused for
    # the non-empty directory), and one whose code tar is missing (its first input). Both
    # remove the plaintext first.
    code = app_tar if refused == "not empty" else app_tar.with_name("missing.tar")
    run = subprocess.run(
        [*run_args(code, enclave.workdir), "--simulation", "--provision", "push", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert not memory.exists(), "the crashed enclave's memory is still in the work directory"
    removal, error = run.stderr.splitlines()
    assert _removal_lines(removal) == [removal]
    assert str(memory) in removal
    assert (refused if refused == "not empty" else str(code)) in error
    # The sealed state is untouched, byte for byte.
    for path, data in sealed.items():
        assert path.read_bytes() == data, path


def test_a_sealed_restart_after_a_crash_serves_again(
    enclave: Enclave,
    secrets_file: Path,
    sealed_file: Path,
    env: dict[str, str],
    app_tar: Path,
    tmp_path: Path,
) -> None:
    _crash(enclave, secrets_file, sealed_file)
    again = tmp_path / "again"
    again.mkdir()
    restart = start_enclave(
        app_tar, again, env, "--workdir", str(enclave.workdir), "--force",
        port=enclave.port, provision="sealed",
    )  # fmt: skip
    try:
        restart.wait_for("serving https://")
        assert len(_removal_lines(read(restart.err))) == 1, restart.log()
        status, body = https_get(restart.port, enclave.workdir / "cert.pem", "/secret/SEALED")
        assert (status, body) == ("200", "sealed-6b1f")
    finally:
        stop_process(restart.proc)


def test_a_run_on_a_work_directory_in_use_is_refused_and_changes_nothing(
    enclave: Enclave, secrets_file: Path, env: dict[str, str], app_tar: Path
) -> None:
    _provisioned(enclave, secrets_file)
    memory = enclave.workdir / "tls"
    before = sorted(p.name for p in memory.iterdir())
    # --force would otherwise clear the work directory for the new run, enclave memory included.
    second = subprocess.run(
        [*run_args(app_tar, enclave.workdir), "--simulation", "--provision", "push",
         "--dry-run", "--force"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    [line] = second.stderr.splitlines()
    assert "in use" in line and str(enclave.workdir) in line
    assert sorted(p.name for p in memory.iterdir()) == before
    assert https_get(enclave.port, enclave.workdir / "cert.pem", "/secret/API_KEY") == (
        "200",
        SECRET,
    )
    assert enclave.stop() == 0
