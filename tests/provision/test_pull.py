"""Pull provisioning: mse-run --provision pull against a real mse-secrets serve process.

The 403 tests present client certificates over real TLS: each would be released the secrets if
its check were missing (the policy's own enclave, built the same way, is released them).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import ratls
from mse_base._internal.files import private_key_pem, write_private
from mse_base._internal.provision.protocol import PULL_PATH
from mse_base._internal.simulation.pki import SimulationQuoteProvider
from tests.certs import self_signed_pem
from tests.net import free_port
from tests.slowclients import ATTACKER

from .conftest import (
    SECRET,
    UUID,
    SecretsServer,
    encrypt_code,
    pull_args,
    read,
    serve_secrets,
    stop_process,
)

POLICY_MRENCLAVE = "11" * 32


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str], secrets_file: Path) -> Iterator[SecretsServer]:
    running = serve_secrets(tmp_path, env, secrets_file, POLICY_MRENCLAVE)
    yield running
    running.proc.terminate()
    running.proc.wait(timeout=30)


def _client_cert(
    tmp: Path, pki: Path, *, mrenclave: str | None, bound: bool = True
) -> tuple[Path, Path]:
    """An RA-TLS client certificate (or, with no mrenclave, a plain self-signed one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_path, cert_path = tmp / "client-key.pem", tmp / "client.pem"
    if mrenclave is None:
        return self_signed_pem(tmp, "plain")
    provider = SimulationQuoteProvider(
        mrenclave=bytes.fromhex(mrenclave), mrsigner=b"\x22" * 32, directory=pki
    )
    quoted = key if bound else ec.generate_private_key(ec.SECP256R1())
    cert = ratls.build_certificate(
        key=key,
        host="localhost",
        deployment_id=uuid.UUID(UUID),
        not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        quote=provider.quote(ratls.report_data_for_key(quoted.public_key())),
    )
    write_private(key_path, private_key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _pull(server: SecretsServer, client: tuple[Path, Path] | None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(server.ca))
    if client is not None:
        context.load_cert_chain(*client)
    connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=30)
    try:
        connection.request("GET", PULL_PATH)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_the_policy_enclave_gets_the_secrets(server: SecretsServer, tmp_path: Path) -> None:
    status, body = _pull(server, _client_cert(tmp_path, server.pki, mrenclave=POLICY_MRENCLAVE))
    assert status == 200
    assert json.loads(body)["secrets"]["API_KEY"] == SECRET
    assert f"200 released to MRENCLAVE {POLICY_MRENCLAVE}" in read(server.err)
    assert SECRET not in read(server.err)


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("none", "no client certificate"),
        ("plain", "ratls.evidence: no SGX quote"),
        ("other-mrenclave", f"policy.mrenclave: MRENCLAVE {'33' * 32} is not one the policy"),
        ("unbound-key", "ratls.key_binding"),
    ],
)
def test_other_clients_get_403_and_nothing(
    server: SecretsServer, tmp_path: Path, client: str, reason: str
) -> None:
    pair = {
        "none": lambda: None,
        "plain": lambda: _client_cert(tmp_path, server.pki, mrenclave=None),
        "other-mrenclave": lambda: _client_cert(tmp_path, server.pki, mrenclave="33" * 32),
        "unbound-key": lambda: _client_cert(
            tmp_path, server.pki, mrenclave=POLICY_MRENCLAVE, bound=False
        ),
    }[client]()
    status, body = _pull(server, pair)
    assert status == 403
    assert reason in json.loads(body)["error"]
    assert SECRET not in body
    # The refused client learns the check it failed, not what would have passed it.
    assert POLICY_MRENCLAVE not in body


def test_pull_delivers_the_code_key_and_secrets_the_app_serves(
    app_tar: Path, tmp_path: Path, env: dict[str, str], secrets_file: Path
) -> None:
    code_key, app_tar = encrypt_code(app_tar, tmp_path)
    app_port, server_port = free_port(), free_port()
    pair = self_signed_pem(tmp_path, "owner")
    # The enclave's identity covers the server and its CA: measure first, then serve under it.
    dry = subprocess.run(
        [*pull_args(app_tar, tmp_path / "dry", app_port, server_port, pair[0]), "--dry-run",
         "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    mrenclave = json.loads(dry.stdout)["mrenclave"]
    server = serve_secrets(
        tmp_path, env, secrets_file, mrenclave, port=server_port, pair=pair, code_key=code_key
    )
    marker, err = tmp_path / "app-imported", tmp_path / "run.err"
    workdir = tmp_path / "wd"
    enclave = subprocess.Popen(
        pull_args(app_tar, workdir, app_port, server_port, pair[0]),
        stdout=subprocess.DEVNULL, stderr=err.open("w"),
        env={**env, "MSE_TEST_MARKER": str(marker)}, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "RA-TLS check passed" not in read(err):
            assert enclave.poll() is None and time.monotonic() < deadline, read(err)
            time.sleep(0.1)
        served = subprocess.run(
            ["curl", "-sS", "--fail", "--cacert", str(workdir / "cert.pem"),
             f"https://localhost:{app_port}/secret/API_KEY"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert served.stdout == SECRET, served.stderr
        assert f"200 released to MRENCLAVE {mrenclave}" in read(server.err)
        assert "provisioned: 2 secret(s), code decrypted" in read(err)
        enclave.terminate()
        assert enclave.wait(timeout=30) == 0
        assert SECRET not in read(err) + read(server.err)
        assert not (workdir / "tls").exists()
    finally:
        for proc in (enclave, server.proc):
            if proc.poll() is None:
                stop_process(proc)


def test_an_untrusted_server_stops_the_enclave(
    app_tar: Path, tmp_path: Path, env: dict[str, str], server: SecretsServer
) -> None:
    (tmp_path / "other").mkdir()
    other_ca, _ = self_signed_pem(tmp_path / "other", "other")
    marker = tmp_path / "app-imported"
    result = subprocess.run(
        pull_args(app_tar, tmp_path / "wd", free_port(), server.port, other_ca),
        capture_output=True, text=True, env={**env, "MSE_TEST_MARKER": str(marker)},
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"the secrets server https://localhost:{server.port} is not trusted" in result.stderr
    assert "the app was not started" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert "released" not in read(server.err)


def test_a_refused_enclave_logs_the_whole_reason_and_never_the_policy(
    app_tar: Path, tmp_path: Path, env: dict[str, str], server: SecretsServer
) -> None:
    marker = tmp_path / "app-imported"
    result = subprocess.run(
        pull_args(app_tar, tmp_path / "wd", free_port(), server.port, server.ca),
        capture_output=True, text=True, env={**env, "MSE_TEST_MARKER": str(marker)},
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    mrenclave = result.stdout.splitlines()[0].split()[1]
    # Longer than the 100 characters it was once cut to, and whole up to the last word.
    reason = f"policy.mrenclave: MRENCLAVE {mrenclave} is not one the policy allows"
    assert f"refused this enclave: 403 {reason}; the app was not started" in result.stderr
    assert POLICY_MRENCLAVE not in result.stderr  # the host reads this log
    assert POLICY_MRENCLAVE in read(server.err)  # the owner's log keeps the full reason
    assert not marker.exists()


def test_a_request_path_is_logged_with_its_control_characters_escaped(
    server: SecretsServer,
) -> None:
    context = ssl.create_default_context(cafile=str(server.ca))
    with (
        socket.create_connection(("localhost", server.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /\x1b[2J\x1b[31mfake HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 404"), answer
    log = read(server.err)
    assert "GET /\\x1b[2J\\x1b[31mfake -> 404" in log
    assert "\x1b" not in log


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:", 1)[1].split()[0])


# Ten times what a thread per connection let through before, and within the server's queue.
IDLE = 200


def test_idle_connections_neither_exhaust_the_server_nor_keep_an_enclave_out(
    server: SecretsServer, tmp_path: Path
) -> None:
    client = _client_cert(tmp_path, server.pki, mrenclave=POLICY_MRENCLAVE)
    idle: list[socket.socket] = []
    try:
        # Connected from another address than the enclave's, never a byte sent.
        for _ in range(IDLE):
            idle.append(
                socket.create_connection(
                    ("127.0.0.1", server.port), timeout=30, source_address=(ATTACKER, 0)
                )
            )
        threads = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the server accepts them meanwhile
            threads = max(threads, _threads(server.proc.pid))
            time.sleep(0.2)
        assert threads <= 64 + 8, f"{threads} threads for {IDLE} idle connections"
        started = time.monotonic()
        status, body = _pull(server, client)
        assert status == 200, body
        assert time.monotonic() - started < 30
        assert json.loads(body)["secrets"]["API_KEY"] == SECRET
    finally:
        for sock in idle:
            sock.close()
