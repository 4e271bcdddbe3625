"""mse-run --simulation checks the server on its port is its own enclave, not whatever answers.

Real processes throughout: a plain HTTP server, a TLS server with another certificate, a second
mse-run, and a stand-in enclave process whose certificate file is compared with what is served.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.enclave.supervise import _served_certificate, _Simulated
from mse_base.errors import Error
from tests.certs import self_signed_pem
from tests.net import free_port
from tests.processes import stop_process

from .conftest import FLASK_APP, make_tar, run_args, wait_port

TLS_SERVER = """\
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.create_server(("127.0.0.1", int(sys.argv[3])))
while True:
    conn, _ = listener.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
    except OSError:
        pass
"""


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        stop_process(proc)


def _tls_server(tmp: Path, port: int, procs: list[subprocess.Popen[Any]]) -> Path:
    cert, key = self_signed_pem(tmp, "other")
    proc = subprocess.Popen(
        [sys.executable, "-c", TLS_SERVER, str(cert), str(key), str(port)], text=True
    )
    procs.append(proc)
    wait_port(port, proc)
    return cert


def _http_server(port: int, procs: list[subprocess.Popen[Any]]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    procs.append(proc)
    wait_port(port, proc)


def _run_fails_on_busy_port(
    tar: Path, workdir: Path, env: dict[str, str], port: int, deployment: str
) -> str:
    args = [
        *run_args(tar, workdir, **{"--port": str(port), "--uuid": deployment}),
        "--simulation",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "RA-TLS check passed" not in result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"mse-run: error: port {port} on 127.0.0.1 is already in use by another process; stop "
        "it or choose another --port"
    ], result.stderr
    # Refused before anything was written or started.
    assert not workdir.exists()
    assert _processes_mentioning(deployment) == []
    return result.stderr


def test_plain_http_server_on_the_port(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    _http_server(port, procs)
    _run_fails_on_busy_port(flask_tar, tmp_path / "wd", env, port, str(uuid.uuid4()))


def test_tls_server_with_another_certificate_on_the_port(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    _tls_server(tmp_path, port, procs)
    _run_fails_on_busy_port(flask_tar, tmp_path / "wd", env, port, str(uuid.uuid4()))


def test_second_mse_run_on_the_same_port(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    first_id = str(uuid.uuid4())
    err = tmp_path / "first.err"
    first = subprocess.Popen(
        [
            *run_args(flask_tar, tmp_path / "wdA", **{"--port": str(port), "--uuid": first_id}),
            "--simulation",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err.open("w"),
        env=env,
        text=True,
    )
    procs.append(first)
    deadline = time.monotonic() + 120
    while "RA-TLS check passed" not in err.read_text():
        assert first.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.1)
    first_cert = (tmp_path / "wdA" / "cert.pem").read_bytes()
    _run_fails_on_busy_port(flask_tar, tmp_path / "wdB", env, port, str(uuid.uuid4()))
    # The first one is untouched and still the one serving.
    assert first.poll() is None
    assert (tmp_path / "wdA" / "cert.pem").read_bytes() == first_cert
    first.terminate()
    assert first.wait(timeout=30) == 0
    assert _processes_mentioning(first_id) == []


def test_port_taken_after_the_start_is_not_verified(
    tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[Any]]
) -> None:
    # The race the early check cannot see: another server takes the port while the enclave is
    # starting (here: while its app is being imported). Either the enclave's own bind error or
    # mse-run's certificate comparison stops the run; never a passed check.
    markers = tmp_path / "markers"
    markers.mkdir()
    app = (
        "import os, pathlib, time\n"
        "markers = pathlib.Path(os.environ['MSE_TEST_MARKERS'])\n"
        "(markers / 'started').touch()\n"
        "while not (markers / 'go').exists():\n"
        "    time.sleep(0.05)\n" + FLASK_APP
    )
    tar = make_tar(tmp_path / "slow.tar", {"app.py": app})
    port = free_port()
    deployment = str(uuid.uuid4())
    workdir = tmp_path / "wd"
    run = subprocess.Popen(
        [
            *run_args(tar, workdir, **{"--port": str(port), "--uuid": deployment}),
            "--simulation",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, "MSE_TEST_MARKERS": str(markers)},
        text=True,
    )
    procs.append(run)
    deadline = time.monotonic() + 120
    while not (markers / "started").exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    _tls_server(tmp_path, port, procs)
    (markers / "go").touch()
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stderr
    assert "RA-TLS check passed" not in stderr and "Traceback" not in stderr
    assert (
        f"port {port} is served by another process, not this enclave" in stderr
        or f"port {port} on 127.0.0.1 is already in use" in stderr
    ), stderr
    assert _processes_mentioning(deployment) == []
    assert not workdir.exists()


# --- the comparison itself, against a stand-in enclave process -------------------------------


def _stand_in(seconds: float, procs: list[subprocess.Popen[Any]]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    procs.append(child)
    return child


def _own(certificate: Path) -> _Simulated:
    """A simulated enclave known by the certificate it writes (already started here)."""

    def started() -> subprocess.Popen[bytes]:
        raise AssertionError("started by the test")

    return _Simulated(certificate, started)


def test_certificate_other_than_the_enclaves_is_refused(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    served = _tls_server(tmp_path, port, procs)
    child = _stand_in(60, procs)
    ours, _ = self_signed_pem(tmp_path, "ours")
    with pytest.raises(Error) as caught:
        _served_certificate(child, _own(ours), "127.0.0.1", port, "localhost", None)
    assert str(caught.value) == (
        f"port {port} is served by another process, not this enclave; choose another --port"
    )
    # The control: the same server passes when its certificate is the one the enclave wrote.
    der = _served_certificate(child, _own(served), "127.0.0.1", port, "localhost", None)
    assert der == x509.load_pem_x509_certificate(served.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def test_non_tls_server_is_refused_with_the_cause(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    port = free_port()
    _http_server(port, procs)
    child = _stand_in(60, procs)
    ours, _ = self_signed_pem(tmp_path, "ours")
    with pytest.raises(Error, match=f"port {port} does not answer with this enclave's certificate"):
        _served_certificate(child, _own(ours), "127.0.0.1", port, "localhost", None)


def test_no_certificate_yet_keeps_waiting_until_the_enclave_exits(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    # Something answers, but the enclave has not written its certificate: that is not its port,
    # so nothing is fetched; the enclave's exit (it would fail to bind) ends the wait.
    port = free_port()
    _tls_server(tmp_path, port, procs)
    child = _stand_in(1.5, procs)
    started = time.monotonic()
    assert (
        _served_certificate(child, _own(tmp_path / "none"), "127.0.0.1", port, "localhost", None)
        is None
    )
    assert time.monotonic() - started >= 1
