"""Fixtures for driving mse-run / mse-test as real subprocesses."""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from mse_base._internal.enclave.deployment import Deployment

BIN = Path(sys.executable).parent

FLASK_APP = """\
from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask in the enclave"
"""

ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello from ASGI in the enclave"})
"""


def make_tar(path: Path, files: dict[str, str], *, reverse: bool = False, mtime: int = 0) -> Path:
    names = sorted(files, reverse=reverse)
    with tarfile.open(path, "w") as archive:
        for name in names:
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}: {out}\n{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def future_epoch(days: int = 30) -> str:
    # Whole days, so two runs in one test measure the same argv.
    return str((int(time.time()) // 86400 + days) * 86400)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An isolated HOME / XDG tree, so tests can prove nothing is written outside the workdir."""
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    variables = dict(os.environ)
    variables.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PATH=f"{BIN}:{variables.get('PATH', '')}",
    )
    return variables


def run_args(tar: Path, workdir: Path, **overrides: str | None) -> list[str]:
    """mse-run's command line; an override of None leaves that option out."""
    options: dict[str, str | None] = {
        "--size": "1G",
        "--code": str(tar),
        "--host": "localhost",
        "--application": "app:app",
        "--uuid": "533a2b83-4bc5-4a9c-955e-208c530bfd15",
        "--self-signed": future_epoch(),
        "--workdir": str(workdir),
    }
    options.update(overrides)
    args = [str(BIN / "mse-run")]
    for key, value in options.items():
        if value is not None:
            args += [key, value]
    return args


@pytest.fixture
def flask_tar(tmp_path: Path) -> Path:
    return make_tar(tmp_path / "flask.tar", {"app.py": FLASK_APP})


@pytest.fixture
def asgi_tar(tmp_path: Path) -> Path:
    return make_tar(tmp_path / "asgi.tar", {"app.py": ASGI_APP})


def make_deployment(**overrides: Any) -> Deployment:
    """A valid Deployment for unit tests, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "application": "app:app",
        "host": "localhost",
        "deployment_id": uuid.UUID("533a2b83-4bc5-4a9c-955e-208c530bfd15"),
        "expiry": dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc),
        "bind": "127.0.0.1",
        "port": 8443,
        "debug": False,
    }
    fields.update(overrides)
    return Deployment(**fields)
