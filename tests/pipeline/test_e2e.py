"""The whole flow in simulation, through real processes, sockets, TLS, curl and openssl."""

from __future__ import annotations

import datetime as dt
import hashlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.dcap.quote import parse_quote
from mse_base._internal.dcap.ratls import extract_evidence
from tests.net import free_port, listening_addresses, openssl_served_certificate
from tests.processes import stop_process

from .conftest import BIN, future_epoch, make_tar, run_args


@dataclass
class Enclave:
    proc: subprocess.Popen[str]
    port: int
    mrenclave: str
    expiry: int
    stderr: Path
    env: dict[str, str]
    ca: Path


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def start_enclave(tar: Path, tmp: Path, env: dict[str, str], port: int) -> Enclave:
    out, err = tmp / "run.out", tmp / "run.err"
    expiry = future_epoch(10)
    args = [
        *run_args(tar, tmp / "wd", **{"--port": str(port), "--self-signed": expiry}),
        "--simulation",
    ]
    proc = subprocess.Popen(args, stdout=out.open("w"), stderr=err.open("w"), env=env, text=True)
    deadline = time.monotonic() + 120
    while "RA-TLS check passed" not in _read(err):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"mse-run did not come up:\n{_read(out)}\n{_read(err)}")
        time.sleep(0.1)
    mrenclave = _read(out).splitlines()[0].split()[1]
    ca = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation" / "ca.pem"
    return Enclave(proc, port, mrenclave, int(expiry), err, env, ca)


def stop(enclave: Enclave) -> int:
    enclave.proc.send_signal(signal.SIGTERM)
    return enclave.proc.wait(timeout=30)


@pytest.fixture
def flask_enclave(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> Iterator[Enclave]:
    enclave = start_enclave(flask_tar, tmp_path, env, free_port())
    yield enclave
    stop_process(enclave.proc)


def fetch_cert(port: int, tmp: Path) -> Path:
    return openssl_served_certificate(port, tmp / "cert.pem")


def curl(port: int, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--cacert",
            str(cert),
            "--resolve",
            f"localhost:{port}:127.0.0.1",
            *extra,
            f"https://localhost:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_flask_app_over_ratls(flask_enclave: Enclave, tmp_path: Path) -> None:
    # Without --bind a simulated enclave serves this machine only.
    assert listening_addresses(flask_enclave.port) == {"127.0.0.1"}
    cert_path = fetch_cert(flask_enclave.port, tmp_path)
    response = curl(flask_enclave.port, cert_path)
    assert response.returncode == 0, response.stderr
    assert response.stdout == "Hello from Flask in the enclave"

    h2 = curl(flask_enclave.port, cert_path, "--http2", "-o", "/dev/null", "-w", "%{http_version}")
    assert h2.stdout == "2"
    alpn = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{flask_enclave.port}", "-alpn", "h2"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    assert "ALPN protocol: h2" in alpn

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.not_valid_after_utc == dt.datetime.fromtimestamp(
        flask_enclave.expiry, dt.timezone.utc
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    quote = parse_quote(extract_evidence(cert)[0].quote)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert quote.report_body.report_data == hashlib.sha256(spki).digest() + bytes(32)
    assert quote.report_body.mr_enclave.hex() == flask_enclave.mrenclave
    # mse-run itself saved the certificate it verified.
    assert (tmp_path / "wd" / "cert.pem").read_bytes().strip() == cert_path.read_bytes().strip()

    verify = [str(BIN / "mse-verify"), f"https://localhost:{flask_enclave.port}"]
    ok = subprocess.run(
        [*verify, "--simulation-ca", str(flask_enclave.ca), "--mrenclave", flask_enclave.mrenclave],
        capture_output=True,
        text=True,
        env=flask_enclave.env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    wrong = subprocess.run(
        [*verify, "--simulation-ca", str(flask_enclave.ca), "--mrenclave", "00" * 32],
        capture_output=True,
        text=True,
        env=flask_enclave.env,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 1 and "MRENCLAVE" in wrong.stderr.upper()
    intel_only = subprocess.run(
        [*verify, "--mrenclave", flask_enclave.mrenclave],
        capture_output=True,
        text=True,
        env=flask_enclave.env,
        timeout=60,
        check=False,
    )
    assert intel_only.returncode != 0

    # The simulated enclave's TLS key is private while it runs and does not outlive it.
    tls_dir = tmp_path / "wd" / "tls"
    assert tls_dir.stat().st_mode & 0o777 == 0o700
    assert (tls_dir / "tls-key.pem").stat().st_mode & 0o777 == 0o600
    assert stop(flask_enclave) == 0
    assert not tls_dir.exists()


def test_asgi_app_over_ratls(asgi_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    enclave = start_enclave(asgi_tar, tmp_path, env, free_port())
    try:
        cert = fetch_cert(enclave.port, tmp_path)
        response = curl(enclave.port, cert)
        assert response.stdout == "Hello from ASGI in the enclave"
        assert "(ASGI)" in _read(enclave.stderr)
    finally:
        assert stop(enclave) == 0


def test_import_error_stops_the_run(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(tmp_path / "broken.tar", {"app.py": "import does_not_exist_anywhere\n"})
    result = subprocess.run(
        [*run_args(tar, tmp_path / "wd", **{"--port": str(free_port())}), "--simulation"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "does_not_exist_anywhere" in result.stderr
    assert "Traceback" not in result.stderr
    # It never served: the work directory this run created is gone, so a fixed tar needs no
    # --force.
    assert not (tmp_path / "wd").exists()


def test_mse_test_serves_plain_http(tmp_path: Path, env: dict[str, str]) -> None:
    from .conftest import FLASK_APP, wait_port

    code = tmp_path / "mse-app"
    code.mkdir()
    (code / "app.py").write_text(FLASK_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mse-test"),
            "--application",
            "app:app",
            "--code-dir",
            str(code),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_port(port, proc)
        response = subprocess.run(
            ["curl", "--silent", "--fail", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert response.stdout == "Hello from Flask in the enclave"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_mse_test_reports_missing_module(tmp_path: Path, env: dict[str, str]) -> None:
    code = tmp_path / "mse-app"
    code.mkdir()
    result = subprocess.run(
        [str(BIN / "mse-test"), "--application", "nothere:app", "--code-dir", str(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "nothere" in result.stderr and "Traceback" not in result.stderr


def test_mse_test_says_how_to_give_an_app_its_secrets(tmp_path: Path, env: dict[str, str]) -> None:
    """An app that reads a secret, under mse-test: the error says how to point MSE_SECRETS at a
    test file; done so, the app serves the value."""
    from .conftest import wait_port

    code = tmp_path / "mse-app"
    code.mkdir()
    (code / "app.py").write_text(
        "from flask import Flask\n"
        "from mse_base import secrets\n\n"
        'API_KEY = secrets.get("API_KEY")\n'
        "app = Flask(__name__)\n\n\n"
        '@app.route("/")\n'
        "def hello():\n"
        "    return API_KEY\n"
    )
    port = free_port()
    args = [str(BIN / "mse-test"), "--application", "app:app", "--code-dir", str(code)]
    args += ["--port", str(port)]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("mse-test: error: importing module 'app' of --application app:app")
    assert line.endswith(
        "SecretsUnavailable: no provisioned secrets: MSE_SECRETS is not set (secrets exist only "
        "in an enclave started with mse-run --provision, once it was provisioned); to try the "
        "app with mse-test, set MSE_SECRETS=path/to/test-secrets.json, a JSON object of name: "
        "value"
    )
    test_secrets = tmp_path / "test-secrets.json"
    test_secrets.write_text('{"API_KEY": "test-value"}')
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "MSE_SECRETS": str(test_secrets)},
    )
    try:
        wait_port(port, proc)
        response = subprocess.run(
            ["curl", "--silent", "--fail", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert response.stdout == "test-value"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
