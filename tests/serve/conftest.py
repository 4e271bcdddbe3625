from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import self_signed_pem
from tests.net import free_port

HERE = Path(__file__).parent
APPS = HERE / "apps"
RUNNER = HERE / "run_server.py"
START_TIMEOUT = 30


@dataclass(frozen=True)
class TLSPair:
    cert: Path
    key: Path


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    scheme: str
    interface: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://localhost:{self.port}/"

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> TLSPair:
    cert, key = self_signed_pem(tmp_path_factory.mktemp("tls"), "server")
    return TLSPair(cert, key)


def start_server(
    spec: str, tls: TLSPair | None, *, port: int | None = None, code_dir: Path = APPS
) -> Server:
    """Start run_server.py and wait for READY; raise with its stderr if it exits first."""
    port = port or free_port()
    argv = [sys.executable, str(RUNNER), spec, str(code_dir), str(port)]
    if tls is not None:
        argv += [str(tls.cert), str(tls.key)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE
    )
    assert proc.stdout is not None
    # Raw reads on the descriptor: select() on the text wrapper would miss lines that its buffer
    # already holds (INTERFACE and READY often arrive in one read), and wait for nothing.
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    pending = b""
    interface = ""
    while True:
        while b"\n" not in pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"{spec}: server did not report READY")
            chunk = os.read(fd, 4096)
            if not chunk:
                _, err = proc.communicate(timeout=30)
                raise ServerExited(proc.returncode, err)
            pending += chunk
        raw, pending = pending.split(b"\n", 1)
        line = raw.decode()
        if line.startswith("INTERFACE "):
            interface = line.split()[1]
        if line.strip() == "READY":
            return Server(proc, port, "https" if tls else "http", interface)


class ServerExited(Exception):
    def __init__(self, returncode: int | None, stderr: str) -> None:
        super().__init__(f"server exited with {returncode}: {stderr}")
        self.returncode = returncode
        self.stderr = stderr


@pytest.fixture
def serve_app(tls_pair: TLSPair) -> Iterator[object]:
    started: list[Server] = []

    def start(spec: str, *, tls: bool = True, port: int | None = None) -> Server:
        server = start_server(spec, tls_pair if tls else None, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate(timeout=30)
