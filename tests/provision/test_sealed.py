"""Sealed secrets end to end: push once with --sealed-secrets, restart with --provision sealed.

The restart has no owner and no server: whatever it serves came from the sealed state. Each
refusal is checked against a run that would otherwise succeed (the same work directory, the same
command), so it fails without its check.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from mse_base._internal.enclave.manifest import SEALED_STATE_NAME
from tests.certs import self_signed_pem
from tests.net import free_port

from .conftest import (
    APP_SOURCE,
    SECRET,
    UUID,
    Enclave,
    encrypt_code,
    make_tar,
    read,
    run_args,
    start_enclave,
)

SEALED_VALUE = "sealed-9d2c-do-not-log"


def _curl(
    enclave: Enclave, path: str, cacert: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(cacert or enclave.workdir / "cert.pem"),
         "-w", "\n%{http_code}", f"{enclave.url}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _body(enclave: Enclave, path: str) -> tuple[str, str]:
    answer = _curl(enclave, path)
    assert answer.returncode == 0, answer.stderr
    body, _, status = answer.stdout.rpartition("\n")
    return status, body


@pytest.fixture
def sealed_file(tmp_path: Path) -> Path:
    path = tmp_path / "sealed.json"
    path.write_text(json.dumps({"SEALED": SEALED_VALUE}))
    return path


def _provision_and_stop(
    code: Path, tmp: Path, env: dict[str, str], port: int, *push: str
) -> Enclave:
    """A push enclave that seals, then stops; its work directory is ``tmp / 'wd'``."""
    first = start_enclave(code, tmp, env, port=port)
    try:
        pushed = first.push(*push)
        assert pushed.returncode == 0, pushed.stderr
        first.wait_for("serving https://")
    finally:
        assert first.stop() == 0, first.log()
    return first


def _restart(code: Path, tmp: Path, env: dict[str, str], port: int, *extra: str) -> Enclave:
    run = tmp / "restart"
    run.mkdir(exist_ok=True)
    enclave = start_enclave(
        code, run, env, "--workdir", str(tmp / "wd"), "--force", *extra,
        port=port, provision="sealed", ready=False,
    )  # fmt: skip
    enclave.workdir = tmp / "wd"
    return enclave


def test_a_sealed_restart_serves_again_with_no_owner(
    app_tar: Path, tmp_path: Path, env: dict[str, str], secrets_file: Path, sealed_file: Path
) -> None:
    code_key, code = encrypt_code(app_tar, tmp_path)
    port = free_port()
    first = _provision_and_stop(
        code, tmp_path, env, port,
        "--secrets", str(secrets_file), "--sealed-secrets", str(sealed_file),
        "--code-key", str(code_key),
    )  # fmt: skip
    assert "sealed for restarts" in first.log()
    state = first.workdir / "secrets" / SEALED_STATE_NAME
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    # Sealed: neither the values nor the key are in the host's file, in any encoding seen here.
    raw = state.read_bytes()
    for value in (SEALED_VALUE, SECRET, code_key.read_text().strip()):
        assert value.encode() not in raw

    restarted = _restart(code, tmp_path, env, port)
    try:
        restarted.wait_for("RA-TLS check passed")
        assert "restored from the sealed state: 1 secret(s), code decrypted" in restarted.log()
        assert restarted.requests_seen() == 0
        # The sealed secret is back; the plain one was not sealed, so it is gone.
        assert _body(restarted, "/secret/SEALED") == ("200", SEALED_VALUE)
        assert _body(restarted, "/secret/API_KEY")[0] == "500"
        # The same enclave (the same measured argv), and provisioned: a push gets 409.
        assert read(restarted.out).splitlines()[0].split()[1] == first.mrenclave
        again = restarted.push("--secrets", str(secrets_file), mrenclave=first.mrenclave)
        assert again.returncode == 1 and "409 already provisioned" in again.stderr, again.stderr
    finally:
        assert restarted.stop() == 0, restarted.log()
    for log in (first.log(), restarted.log()):
        assert SEALED_VALUE not in log and SECRET not in log


def test_a_changed_enclave_cannot_unseal(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    port = free_port()
    first = _provision_and_stop(app_tar, tmp_path, env, port, "--sealed-secrets", str(sealed_file))
    # Another app in the same work directory: another MRENCLAVE, so another sealing key.
    changed = make_tar(tmp_path / "changed.tar", {"app.py": APP_SOURCE + "\n# changed\n"})
    restarted = _restart(changed, tmp_path, env, port)
    assert restarted.proc.wait(timeout=120) == 1, restarted.log()
    assert f"cannot unseal {first.workdir.resolve() / 'secrets' / SEALED_STATE_NAME}" in read(
        restarted.err
    ), restarted.log()
    assert "the app was not started" in read(restarted.err)
    assert not restarted.marker.exists()
    assert "Traceback" not in restarted.log()


def test_a_tampered_sealed_state_is_refused(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    port = free_port()
    first = _provision_and_stop(app_tar, tmp_path, env, port, "--sealed-secrets", str(sealed_file))
    state = first.workdir / "secrets" / SEALED_STATE_NAME
    raw = bytearray(state.read_bytes())
    raw[-1] ^= 1
    state.write_bytes(bytes(raw))
    restarted = _restart(app_tar, tmp_path, env, port)
    assert restarted.proc.wait(timeout=120) == 1, restarted.log()
    assert "cannot unseal" in read(restarted.err) and "sealed under another key" in read(
        restarted.err
    )
    assert not restarted.marker.exists()


def test_sealed_needs_a_sealed_state_and_push_refuses_one(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    workdir = tmp_path / "wd"
    args = [*run_args(app_tar, workdir, **{"--port": str(free_port()), "--uuid": UUID}),
            "--simulation", "--provision", "sealed"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mse-run: error: --provision sealed: nothing sealed in ")
    assert len(result.stderr.splitlines()) == 1
    assert not workdir.exists()

    port = free_port()
    _provision_and_stop(app_tar, tmp_path, env, port, "--sealed-secrets", str(sealed_file))
    (tmp_path / "again").mkdir()
    again = start_enclave(
        app_tar, tmp_path / "again", env, "--workdir", str(workdir), "--force",
        port=port, ready=False,
    )  # fmt: skip
    assert again.proc.wait(timeout=120) == 2, again.log()
    line = read(again.err).strip()
    assert "holds this deployment's sealed state" in line and "--provision sealed" in line, line
    assert (workdir / "secrets" / SEALED_STATE_NAME).exists()


def test_sealed_measures_as_the_mode_it_restarts(
    app_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    ca = self_signed_pem(tmp_path, "server")[0]
    pull = ("--secrets-server", "https://127.0.0.1:8443", "--secrets-server-ca", str(ca))

    def mrenclave(*provision: str) -> str:
        args = [*run_args(app_tar, tmp_path / "dry", **{"--uuid": UUID}), "--simulation", "--force",
                "--dry-run", "--json", *provision]  # fmt: skip
        result = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        value: str = json.loads(result.stdout)["mrenclave"]
        return value

    push = mrenclave("--provision", "push")
    assert mrenclave("--provision", "sealed") == push
    assert mrenclave("--provision", "sealed", *pull) == mrenclave("--provision", "pull", *pull)
    assert mrenclave("--provision", "pull", *pull) != push
