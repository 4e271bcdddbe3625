"""``mse-run --direct`` refusing bad enclaves with one clear line, on real Gramine."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.net import free_port
from tests.processes import stop_process

from .test_direct import FLASK_REQUIREMENTS, mse_run, pack

# Reads data.txt only once the test says so, over loopback: the test changes the file once the
# app is imported and waiting (so after signing), and only then lets it go on, whatever the
# speed of the machine. Gramine checks a trusted file's hash when it is opened.
WAITING_READER = """\
import pathlib
import socket

from flask import Flask

with socket.create_connection(("127.0.0.1", {port})) as go:
    go.recv(1)
DATA = (pathlib.Path(__file__).parent / "data.txt").read_text()
app = Flask(__name__)
"""

SPAWNER = b"""\
import subprocess

VERSION = subprocess.run(["/bin/true"], check=True)
app = None
"""


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_app_file_changed_after_signing_is_refused(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(240)
        app = WAITING_READER.format(port=listener.getsockname()[1]).encode()
        tar = pack(
            {"app.py": app, "data.txt": b"signed\n", **FLASK_REQUIREMENTS}, tmp_path / "app.tar"
        )
        workdir = tmp_path / "wd"
        args = [*mse_run(runtime_venv / "bin", tar, workdir, port=free_port()), "--direct"]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdout is not None
        # The measurement is printed once the manifest is signed, before Gramine starts.
        assert proc.stdout.readline().startswith("MRENCLAVE: ")
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            stop_process(proc)
            raise AssertionError(f"the app never asked to go on: {proc.communicate()}") from None
        with connection:
            # The app is imported (Gramine refuses a directory listing once a file in it no
            # longer matches) and now waits: the change comes between import and read.
            (workdir / "code" / "data.txt").write_text("changed after signing\n")
            connection.sendall(b"!")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == (
        "mse-run: error: Gramine refused code/data.txt: changed after signing (its SHA-256 no "
        f"longer matches the manifest: {workdir / 'mse.manifest'}); run mse-run again to measure "
        "and sign what is there now"
    ), stderr
    assert "Traceback" not in stderr


def test_app_starting_a_process_gets_the_reason(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    tar = pack({"app.py": SPAWNER}, tmp_path / "app.tar")
    result = _run(
        [*mse_run(runtime_venv / "bin", tar, tmp_path / "wd", port=free_port()), "--direct"], env
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "the enclave cannot start processes (subprocess.Popen" in last, result.stderr
    assert "sys.disallow_subprocesses" in last
    assert not (tmp_path / "wd").exists()


def test_missing_module_is_one_line(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    tar = pack({"app.py": b"app = None\n"}, tmp_path / "app.tar")
    args = mse_run(runtime_venv / "bin", tar, tmp_path / "wd", port=free_port())
    args[args.index("app:app")] = "nosuchmodule:app"
    result = _run([*args, "--direct"], env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot import module 'nosuchmodule'" in errors[0], result.stderr
    assert not (tmp_path / "wd").exists()
    # No simulation PKI either: a missing one is made in the work directory and moved into place
    # only once an enclave passed the RA-TLS check.
    assert list(Path(env["HOME"]).iterdir()) == []


def test_busy_port_refused_before_anything_is_written(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    tar = pack({"app.py": b"app = None\n"}, tmp_path / "app.tar")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(
            [*mse_run(runtime_venv / "bin", tar, tmp_path / "wd", port=port), "--direct"], env
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mse-run: error: port {port} on 127.0.0.1 is already in use by another process; stop "
        "it or choose another --port"
    )
    assert not (tmp_path / "wd").exists()
    assert list(Path(env["HOME"]).iterdir()) == []


def test_a_bad_listening_variable_is_refused_inside_gramine(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """MSE_PORT and MSE_BIND reach the enclave from the host, unmeasured, through Gramine's
    passthrough; a host that sets them to anything but a port and an address gets one line."""
    tar = pack({"app.py": b"app = None\n"}, tmp_path / "app.tar")
    workdir = tmp_path / "wd"
    # A dry run keeps the signed manifest in --workdir; gramine-direct then runs it as the host
    # would, with the host's environment.
    dry = _run([*mse_run(runtime_venv / "bin", tar, workdir), "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    for name, value, needle in (
        ("MSE_PORT", "443; rm -rf /", "is not a TCP port"),
        ("MSE_BIND", "example.com", "is not an IP address"),
    ):
        result = subprocess.run(
            ["gramine-direct", "mse"],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**env, name: value},
            timeout=120,
            check=False,
        )
        # Gramine's console (the enclave's stdout and stderr) is the host's stdout.
        output = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 2, output
        assert len(output) == 1, output
        assert output[0].startswith(f"mse-bootstrap: error: {name}={value!r} {needle}"), output
