"""The flagship example (examples/flask) gets a secret by push and by pull and serves it back.

Its test route ``/demo-secret`` answers 404 until a secret named DEMO_SECRET is provisioned, so
each test fails if the secret never reaches the app.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.certs import self_signed_pem
from tests.net import free_port
from tests.processes import stop_process

from .conftest import https_get, pull_args, read, serve_secrets, start_enclave, wait_for_line

ROOT = Path(__file__).resolve().parents[2]
DEMO = "demo-6b1f-only-the-enclave"


@pytest.fixture
def flagship_tar(tmp_path: Path) -> Path:
    tar = tmp_path / "flagship.tar"
    subprocess.run(
        ["tar", "-C", str(ROOT / "examples" / "flask"), "-cf", str(tar), "app.py",
         "requirements.txt"],
        check=True,
    )  # fmt: skip
    return tar


@pytest.fixture
def demo_secrets(tmp_path: Path) -> Path:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"DEMO_SECRET": DEMO}))
    return path


def test_push_reaches_the_flagship_example(
    flagship_tar: Path, tmp_path: Path, env: dict[str, str], demo_secrets: Path
) -> None:
    enclave = start_enclave(flagship_tar, tmp_path, env)
    try:
        cert = enclave.workdir / "cert.pem"
        # Only the provisioning endpoint answers until the push.
        assert https_get(enclave.port, cert, "/demo-secret")[0] == "404"
        pushed = enclave.push("--secrets", str(demo_secrets))
        assert pushed.returncode == 0, pushed.stderr
        enclave.wait_for("serving https://")
        assert https_get(enclave.port, cert, "/demo-secret") == ("200", DEMO)
    finally:
        assert enclave.stop() == 0, enclave.log()
    assert DEMO not in enclave.log()


def test_pull_reaches_the_flagship_example(
    flagship_tar: Path, tmp_path: Path, env: dict[str, str], demo_secrets: Path
) -> None:
    app_port, server_port = free_port(), free_port()
    pair = self_signed_pem(tmp_path, "server")
    args = pull_args(flagship_tar, tmp_path / "wd", app_port, server_port, pair[0])
    dry = subprocess.run(
        [*args, "--dry-run", "--json"], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    server = serve_secrets(
        tmp_path, env, demo_secrets, json.loads(dry.stdout)["mrenclave"], port=server_port,
        pair=pair,
    )  # fmt: skip
    err = tmp_path / "run.err"
    enclave = subprocess.Popen(
        [*args, "--force"], stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env
    )
    try:
        wait_for_line(enclave, err, "RA-TLS check passed")
        assert https_get(app_port, tmp_path / "wd" / "cert.pem", "/demo-secret") == ("200", DEMO)
    finally:
        stop_process(enclave)
        stop_process(server.proc)
    assert DEMO not in read(err) + read(server.err)
