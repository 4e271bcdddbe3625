"""Push provisioning end to end: mse-run --provision push, mse-secrets push, the app, curl.

Each security test is written so that it fails without its check: the refused request is one the
enclave would otherwise accept (the right UUID, valid JSON), and what it must not change is
looked at afterwards.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
from pathlib import Path

from mse_base._internal.provision import client, codefile
from mse_base._internal.provision.protocol import MAX_BODY, PATH
from tests.net import free_port

from .conftest import (
    APP_SOURCE,
    BIN,
    SECRET,
    UUID,
    Enclave,
    encrypt_code,
    make_tar,
    read,
    run_args,
    start_enclave,
    stop_process,
)


def _curl(enclave: Enclave, path: str) -> str:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "--cacert",
            str(enclave.workdir / "cert.pem"),
            f"{enclave.url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _send(enclave: Enclave, body: bytes, path: str = PATH) -> client.Answer:
    return client.send("localhost", enclave.port, enclave.verifier(), body, path=path)


def _raw_request(enclave: Enclave, request: bytes) -> bytes:
    """What the endpoint answers ``request``, sent as is over TLS (http.client would refuse
    what a hostile client sends)."""
    context = ssl.create_default_context(cafile=str(enclave.workdir / "cert.pem"))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", enclave.port), timeout=30) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    return answer


def _payload(**fields: object) -> bytes:
    return json.dumps({"uuid": UUID, **fields}).encode()


def _files_under(root: Path, skip: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and skip not in p.parents]


def test_push_delivers_secrets_the_app_serves(
    enclave: Enclave, secrets_file: Path, tmp_path: Path
) -> None:
    assert not enclave.marker.exists(), "the app was imported before provisioning"
    pushed = enclave.push("--secrets", str(secrets_file))
    assert pushed.returncode == 0, pushed.stderr
    assert "provisioned: 2 secret(s)" in pushed.stdout
    assert enclave.mrenclave in pushed.stdout
    enclave.wait_for("serving https://")
    assert enclave.marker.exists()

    assert _curl(enclave, "/secret/API_KEY") == SECRET
    assert json.loads(_curl(enclave, "/secrets-file")) == {
        "API_KEY": SECRET,
        "DB": {"user": "app", "port": 5432},
    }

    # Enclave memory (simulated): a private directory, a private file.
    memory = enclave.workdir / "tls"
    secrets_path = memory / "secrets.json"
    assert stat.S_IMODE(memory.stat().st_mode) == 0o700
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    # Nowhere else: not in the work directory, the logs or mse-secrets' output.
    for path in _files_under(enclave.workdir, skip=memory):
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in pushed.stdout + pushed.stderr

    assert enclave.stop() == 0
    assert SECRET not in enclave.log()
    assert not memory.exists(), "the simulated enclave memory outlived the enclave"


def test_wrong_mrenclave_sends_nothing(enclave: Enclave, secrets_file: Path) -> None:
    wrong = "00" * 32
    refused = enclave.push("--secrets", str(secrets_file), mrenclave=wrong)
    assert refused.returncode == 1
    assert "nothing was sent" in refused.stderr
    assert "MRENCLAVE" in refused.stderr
    # The enclave logs every request it reads; the right push is then the first and only one.
    pushed = enclave.push("--secrets", str(secrets_file))
    assert pushed.returncode == 0, pushed.stderr
    enclave.wait_for("serving https://")
    assert enclave.requests_seen() == 1, enclave.log()


def test_refusals_change_nothing_then_one_push_wins(enclave: Enclave) -> None:
    memory_secrets = enclave.workdir / "tls" / "secrets.json"

    malformed = _send(enclave, b'{"uuid": "' + UUID.encode() + b'", ')
    assert (malformed.status, malformed.message) == (400, "the body is not UTF-8 JSON")
    duplicated = _send(enclave, b'{"uuid": "%s", "uuid": "%s"}' % (UUID.encode(), UUID.encode()))
    assert duplicated.status == 400
    unknown = _send(enclave, _payload(secret={"A": "b"}))
    assert unknown.status == 400 and "'secret'" in unknown.message
    # Valid JSON for Python's reader, but nothing the enclave could write back as JSON (1e400
    # overflows to Infinity), encode as UTF-8 (a lone surrogate) or copy (a deep value).
    for field in (b"secrets", b"sealed_secrets"):
        overflow = _send(enclave, b'{"uuid": "%s", "%s": {"A": 1e400}}' % (UUID.encode(), field))
        assert overflow.status == 400 and "Infinity" in overflow.message
    surrogate = _send(enclave, b'{"uuid": "%s", "secrets": {"A": "\\ud800"}}' % UUID.encode())
    assert surrogate.status == 400 and "surrogate" in surrogate.message
    deep = b'{"uuid": "%s", "secrets": {"A": %s1%s}}' % (UUID.encode(), b"[" * 900, b"]" * 900)
    assert _send(enclave, deep).status == 400

    # The right UUID and valid JSON: only the size stands between it and being accepted.
    padding = "x" * MAX_BODY
    oversized = _send(enclave, _payload(secrets={"BIG": padding}))
    assert (oversized.status, oversized.message) == (413, f"the body is over {MAX_BODY} bytes")

    other_uuid = json.dumps({"uuid": "00000000-0000-4000-8000-000000000000"}).encode()
    wrong_uuid = _send(enclave, other_uuid)
    assert wrong_uuid.status == 401

    not_post = client.send("localhost", enclave.port, enclave.verifier(), b"", path="/")
    assert not_post.status == 404  # the app has not started: only the endpoint answers
    # A path cannot write terminal escape sequences into the enclave's log: they are escaped.
    assert _raw_request(enclave, b"GET /\x1b[2Jx HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert "GET /\\x1b[2Jx -> 404" in enclave.log()
    assert "\x1b" not in enclave.log()
    assert not memory_secrets.exists()
    assert not enclave.marker.exists()
    assert enclave.proc.poll() is None

    accepted = _send(enclave, _payload(secrets={"API_KEY": "first"}))
    assert (accepted.status, accepted.message) == (200, "provisioned")
    enclave.wait_for("serving https://")
    second = _send(enclave, _payload(secrets={"API_KEY": "second"}))
    assert (second.status, second.message) == (409, "already provisioned")
    assert _curl(enclave, "/secret/API_KEY") == "first"
    again = enclave.push()
    assert again.returncode == 1
    assert "409 already provisioned" in again.stderr


def test_no_push_before_the_timeout_never_starts_the_app(
    app_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    enclave = start_enclave(app_tar, tmp_path, env, "--provision-timeout", "2", ready=False)
    code = enclave.proc.wait(timeout=120)
    assert code != 0
    assert "no provisioning within 2 s (--provision-timeout): the app was not started" in read(
        enclave.err
    )
    assert "Traceback" not in read(enclave.err)
    assert not enclave.marker.exists()
    assert not (enclave.workdir / "tls").exists()


# --- encrypted code ------------------------------------------------------------------------


def test_encrypted_code_runs_only_with_its_key(
    app_tar: Path, secrets_file: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    key, sealed = encrypt_code(app_tar, tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"secrets.get" not in sealed.read_bytes()

    # An auditor without the key recomputes the measurement from the ciphertext.
    port = free_port()
    dry = subprocess.run(
        [*run_args(sealed, tmp_path / "dry", **{"--uuid": UUID, "--port": str(port)}),
         "--simulation", "--provision",
         "push", "--dry-run", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    # The ciphertext is not runnable without provisioning.
    unprovisioned = subprocess.run(
        [*run_args(sealed, tmp_path / "np"), "--simulation", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert unprovisioned.returncode == 2
    assert "add --provision push" in unprovisioned.stderr

    enclave = start_enclave(sealed, tmp_path, env, port=port)
    try:
        assert enclave.mrenclave == json.loads(dry.stdout)["mrenclave"]
        # The host holds the ciphertext only.
        assert [p.name for p in (enclave.workdir / "code").iterdir()] == ["code.tar.enc"]

        other_key = tmp_path / "other.key"
        codefile.write_key(other_key, codefile.new_key())
        wrong = enclave.push("--secrets", str(secrets_file), "--code-key", str(other_key))
        assert wrong.returncode == 1
        assert "422 'code_key' does not decrypt this enclave's code" in wrong.stderr
        no_key = enclave.push("--secrets", str(secrets_file))
        assert no_key.returncode == 1
        assert "400 this enclave's code is encrypted" in no_key.stderr
        assert not enclave.marker.exists()
        assert not (enclave.workdir / "tls" / "secrets.json").exists()
        assert not (enclave.workdir / "tls" / "app").exists()

        pushed = enclave.push("--secrets", str(secrets_file), "--code-key", str(key))
        assert pushed.returncode == 0, pushed.stderr
        assert "and the code key" in pushed.stdout
        enclave.wait_for("serving https://")
        assert _curl(enclave, "/secret/API_KEY") == SECRET
        for path in _files_under(enclave.workdir, skip=enclave.workdir / "tls"):
            assert b"secrets.get" not in path.read_bytes(), f"plaintext code in {path}"
        assert enclave.stop() == 0
        assert not (enclave.workdir / "tls").exists()
    finally:
        if enclave.proc.poll() is None:
            stop_process(enclave.proc)


def test_a_silent_connection_does_not_block_the_owner(enclave: Enclave) -> None:
    # Connected, never says a word (no TLS handshake): it holds its own thread, not the endpoint.
    with socket.create_connection(("127.0.0.1", enclave.port)):
        pushed = enclave.push()
    assert pushed.returncode == 0, pushed.stderr + enclave.log()


def test_stopped_while_waiting_the_app_never_starts(enclave: Enclave) -> None:
    assert enclave.stop() == 0
    assert "stopped before provisioning; the app was not started" in read(enclave.err)
    assert not enclave.marker.exists()
    assert not (enclave.workdir / "tls").exists()


def test_what_the_encrypted_code_holds_is_told_to_the_owner_only(
    tmp_path: Path, env: dict[str, str]
) -> None:
    tar = make_tar(
        tmp_path / "app.tar",
        {"app.py": APP_SOURCE, "requirements.txt": "confidential-dependency-xyz==1.0\n"},
    )
    key, sealed = encrypt_code(tar, tmp_path)
    enclave = start_enclave(sealed, tmp_path, env)
    try:
        refused = enclave.push("--code-key", str(key))
        assert refused.returncode == 1
        assert "422 the decrypted code cannot run here" in refused.stderr
        assert "confidential-dependency-xyz" in refused.stderr  # the owner learns why
        assert "confidential-dependency-xyz" not in enclave.log()  # the host does not
        assert not enclave.marker.exists()
        assert not (enclave.workdir / "tls" / "app").exists()
    finally:
        enclave.stop()


def test_simulation_enclave_labels_and_the_hint_without_its_ca(
    enclave: Enclave, secrets_file: Path
) -> None:
    """Without --simulation-ca, mse-verify and mse-secrets push refuse a simulation enclave and
    say which option checks it; with it, its MRENCLAVE is labelled simulated."""
    hint = (
        "; to check this simulation quote, pass --simulation-ca "
        f"{enclave.ca} (the ca.pem of the simulation that made it; that is where mse-run keeps it)"
    )
    refusal = (
        "PCK chain (Intel SGX Root CA): does not end at the trusted root: it ends at 'MSE "
        "SIMULATION — NOT SGX Root CA', an mse-base simulation CA, which only a verifier told to "
        "trust it accepts"
    )
    # As a user who forgot the option runs them: the chain is refused before any collateral is
    # fetched.
    verify = [str(BIN / "mse-verify"), enclave.url, "--mrenclave", enclave.mrenclave]
    refused = _run(verify, enclave.env)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"mse-verify: error: {refusal}{hint}"]
    as_json = _run([*verify, "--json"], enclave.env)
    assert json.loads(as_json.stdout)["reasons"] == [refusal + hint]
    push = [str(BIN / "mse-secrets"), "push", enclave.url, "--mrenclave", enclave.mrenclave,
            "--uuid", UUID, "--secrets", str(secrets_file)]  # fmt: skip
    not_sent = _run(push, enclave.env)
    assert not_sent.returncode == 1
    assert not_sent.stderr.splitlines() == [
        f"mse-secrets: error: {refusal}{hint}; nothing was sent"
    ]
    assert enclave.requests_seen() == 0

    verified = _run([*verify, "--simulation-ca", str(enclave.ca)], enclave.env)
    assert verified.returncode == 0, verified.stderr
    assert f"MRENCLAVE   {enclave.mrenclave} (simulated)\n" in verified.stdout
    shown = json.loads(
        _run([*verify, "--simulation-ca", str(enclave.ca), "--json"], enclave.env).stdout
    )
    assert (shown["simulation"], shown["measurement"]) == (True, "simulated")
    pushed = _run([*push, "--simulation-ca", str(enclave.ca)], enclave.env)
    assert pushed.returncode == 0, pushed.stderr
    assert "*** SIMULATION — NOT a real SGX enclave" in pushed.stdout
    assert f"MRENCLAVE   {enclave.mrenclave} (simulated)\n" in pushed.stdout


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
