"""A CA-issued certificate (mse-run --certificate) whose key only the attested enclave gets.

The owner's CA issues the app's certificate; mse-run measures the chain; the key arrives by push
or pull over RA-TLS; clients then use plain `curl --cacert owner-ca.pem`.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.certs import ca_issued_pem, self_signed_pem
from tests.net import free_port, openssl_served_certificate
from tests.processes import stop_process

from .conftest import (
    UUID,
    Enclave,
    pull_args,
    read,
    run_args,
    serve_secrets,
    start_enclave,
    wait_for_line,
)


def _curl(port: int, cacert: Path, path: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(cacert), f"https://localhost:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture
def owner(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The owner's CA, and the chain and key it issued for localhost."""
    ca = self_signed_pem(tmp_path, "owner-ca", common_name="Owner CA", dns=(), ips=())
    chain, key = ca_issued_pem(tmp_path, "app", ca)
    return ca[0], chain, key


def _leaf_pem(chain: Path) -> str:
    leaf = x509.load_pem_x509_certificate(chain.read_bytes())
    return leaf.public_bytes(serialization.Encoding.PEM).decode()


def test_push_installs_the_certificates_key_and_curl_trusts_the_owners_ca(
    app_tar: Path, tmp_path: Path, env: dict[str, str], owner: tuple[Path, Path, Path]
) -> None:
    ca, chain, key = owner
    other_key = ca_issued_pem(tmp_path, "other", (ca, tmp_path / "owner-ca-key.pem"))[1]
    enclave = start_enclave(app_tar, tmp_path, env, "--certificate", str(chain), self_signed=False)
    try:
        # Provisioning runs over RA-TLS: mse-run verified that endpoint, and pushes verify it.
        missing = enclave.push()
        assert missing.returncode == 1 and "needs 'tls_key'" in missing.stderr, missing.stderr
        wrong = enclave.push("--tls-key", str(other_key))
        assert wrong.returncode == 1, wrong.stderr
        assert (
            "422 'tls_key' is not the private key of this enclave's --certificate" in wrong.stderr
        )
        assert not enclave.marker.exists()

        pushed = enclave.push("--tls-key", str(key))
        assert pushed.returncode == 0, pushed.stderr
        assert "provisioned: 0 secret(s) and the TLS key" in pushed.stdout
        enclave.wait_for("serving https://")
        assert f"serving https://localhost:{enclave.port}/ (SIMULATION, --certificate)" in read(
            enclave.err
        )
        answer = _curl(enclave.port, ca)
        assert answer.returncode == 0 and answer.stdout == "Hello from Flask in the enclave", (
            answer.stderr
        )
        served = openssl_served_certificate(enclave.port, tmp_path / "served.pem")
        assert served.read_text() == _leaf_pem(chain)
        # The RA-TLS certificate no longer serves the app: it made way for the CA's.
        assert _curl(enclave.port, enclave.workdir / "cert.pem").returncode != 0
        installed = enclave.workdir / "tls" / "app-key.pem"
        assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    finally:
        assert enclave.stop() == 0, enclave.log()
    assert not (enclave.workdir / "tls").exists()
    assert key.read_text().splitlines()[1] not in enclave.log()


def test_a_tls_key_for_an_enclave_without_certificate_is_refused(
    enclave: Enclave, owner: tuple[Path, Path, Path]
) -> None:
    refused = enclave.push("--tls-key", str(owner[2]))
    assert refused.returncode == 1, refused.stderr
    assert "400 this enclave has no --certificate: send no 'tls_key'" in refused.stderr
    assert not enclave.marker.exists()
    assert enclave.push().returncode == 0  # refused changed nothing: one push still wins


def test_pull_serves_the_certificate_and_a_sealed_restart_keeps_it(
    app_tar: Path, tmp_path: Path, env: dict[str, str], owner: tuple[Path, Path, Path]
) -> None:
    ca, chain, key = owner
    app_port, server_port = free_port(), free_port()
    pair = self_signed_pem(tmp_path, "server")
    args = [
        *pull_args(app_tar, tmp_path / "wd", app_port, server_port, pair[0]),
        "--certificate", str(chain),
    ]  # fmt: skip
    at = args.index("--self-signed")
    del args[at : at + 2]
    dry = subprocess.run(
        [*_swap_workdir(args, tmp_path / "dry"), "--dry-run", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    mrenclave = json.loads(dry.stdout)["mrenclave"]
    sealed = tmp_path / "sealed.json"
    sealed.write_text("{}")
    server = serve_secrets(
        tmp_path, env, None, mrenclave, port=server_port, pair=pair,
        extra=("--tls-key", str(key), "--sealed-secrets", str(sealed)),
    )  # fmt: skip
    err = tmp_path / "run.err"
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env)
    try:
        wait_for_line(first, err, "serving --certificate (SIMULATION)")
        assert _curl(app_port, ca).stdout == "Hello from Flask in the enclave"
        assert "sealed for restarts" in read(err)
        first.terminate()
        assert first.wait(timeout=30) == 0
    finally:
        stop_process(first)
        stop_process(server.proc)
    # No server now: the restart takes the key from its sealed state.
    restart_err = tmp_path / "restart.err"
    restart = [*args, "--force"]
    restart[restart.index("pull")] = "sealed"
    second = subprocess.Popen(
        restart, stdout=subprocess.DEVNULL, stderr=restart_err.open("w"), env=env
    )
    try:
        wait_for_line(second, restart_err, "serving --certificate (SIMULATION)")
        assert "restored from the sealed state: 0 secret(s), --certificate's key installed" in read(
            restart_err
        )
        assert _curl(app_port, ca).stdout == "Hello from Flask in the enclave"
    finally:
        stop_process(second)


def _swap_workdir(args: list[str], workdir: Path) -> list[str]:
    swapped = list(args)
    swapped[swapped.index("--workdir") + 1] = str(workdir)
    return swapped


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other-host", "does not name --host localhost in its subjectAltName"),
        ("no-provision", "--certificate needs --provision push (or pull)"),
        ("not-pem", "not PEM certificates"),
        ("wrong-issuer", "is not issued by the certificate after it"),
        ("expired", "not now: renew it"),
        ("with-san", "--subject and --san shape the self-signed certificate"),
        ("with-key", "the file holds a private key too: give only the chain"),
    ],
)
def test_bad_certificates_get_one_line_and_nothing_written(
    app_tar: Path, tmp_path: Path, env: dict[str, str], owner: tuple[Path, Path, Path],
    case: str, message: str,
) -> None:  # fmt: skip
    ca, chain, _ = owner
    ca_pair = (ca, tmp_path / "owner-ca-key.pem")
    given = chain
    provision = ["--provision", "push"]
    if case == "other-host":
        given = ca_issued_pem(tmp_path, "elsewhere", ca_pair, dns=("app.example.com",))[0]
    elif case == "no-provision":
        provision = []
    elif case == "not-pem":
        given = tmp_path / "garbage.pem"
        given.write_text("not a certificate\n")
    elif case == "wrong-issuer":
        # The leaf, then a CA that did not issue it.
        stranger = self_signed_pem(tmp_path, "stranger", dns=(), ips=())[0]
        given = tmp_path / "mixed.pem"
        given.write_text(_leaf_pem(chain) + stranger.read_text())
    elif case == "expired":
        given = ca_issued_pem(tmp_path, "old", ca_pair, days=-1)[0]
    elif case == "with-san":
        provision += ["--san", "other.example"]
    elif case == "with-key":
        given = tmp_path / "chain-and-key.pem"
        given.write_text(chain.read_text() + owner[2].read_text())
    workdir = tmp_path / "wd"
    args = [
        *run_args(app_tar, workdir, **{"--port": str(free_port()), "--uuid": UUID,
                                       "--self-signed": None}),
        "--simulation", "--certificate", str(given), *provision,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not workdir.exists()


def test_self_signed_and_certificate_are_exclusive(
    app_tar: Path, tmp_path: Path, env: dict[str, str], owner: tuple[Path, Path, Path]
) -> None:
    args = [*run_args(app_tar, tmp_path / "wd"), "--certificate", str(owner[1])]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 2
    assert "not allowed with argument --self-signed" in result.stderr
