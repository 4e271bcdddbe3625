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
    https_get,
    make_tar,
    pull_args,
    read,
    run_args,
    serve_secrets,
    start_enclave,
    stop_process,
    wait_for_line,
)

SEALED_VALUE = "sealed-9d2c-do-not-log"


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
        cert = restarted.workdir / "cert.pem"
        assert https_get(restarted.port, cert, "/secret/SEALED") == ("200", SEALED_VALUE)
        assert https_get(restarted.port, cert, "/secret/API_KEY")[0] == "500"
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
    state = first.workdir / "secrets" / SEALED_STATE_NAME
    # Another app in the same work directory: another MRENCLAVE, so another sealing key.
    changed = make_tar(tmp_path / "changed.tar", {"app.py": APP_SOURCE + "\n# changed\n"})
    refused = _restart(changed, tmp_path, env, port)
    # mse-run names the mismatch before it starts anything: the options are the same, so it is
    # the code...
    assert refused.exit_status() == 2, refused.log()
    line = read(refused.err).strip().splitlines()[-1]
    assert line.startswith("mse-run: error: --provision sealed: this command measures MRENCLAVE ")
    assert f"was sealed by {first.mrenclave}; changed since that run: the code (the --code " in (
        line
    )
    assert " -> " not in line and "the environment (" not in line, line
    assert state.exists()
    # ...without the record of what measured it (a work directory from before it), the
    # MRENCLAVE alone...
    (first.workdir / "secrets.sealed-measurement.json").unlink()
    refused = _restart(changed, tmp_path, env, port)
    assert refused.exit_status() == 2, refused.log()
    line = read(refused.err).strip().splitlines()[-1]
    assert f"was sealed by {first.mrenclave}: repeat the exact options" in line, line
    # ...and without any record, the enclave refuses itself.
    (first.workdir / "secrets.sealed-mrenclave").unlink()
    restarted = _restart(changed, tmp_path, env, port)
    assert restarted.exit_status() == 1, restarted.log()
    assert f"cannot unseal {first.workdir.resolve() / 'secrets' / SEALED_STATE_NAME}" in read(
        restarted.err
    ), restarted.log()
    assert "the app was not started" in read(restarted.err)
    assert not restarted.marker.exists()
    assert "Traceback" not in restarted.log()
    assert state.exists()


def test_a_sealed_restart_with_other_options_names_them(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    port, other = free_port(), free_port()
    first = _provision_and_stop(app_tar, tmp_path, env, port, "--sealed-secrets", str(sealed_file))
    refused = _restart(app_tar, tmp_path, env, other, "--host", "127.0.0.1")
    assert refused.exit_status() == 2, refused.log()
    lines = read(refused.err).strip().splitlines()
    line = lines[-1]
    assert line.startswith("mse-run: error: --provision sealed: this command measures MRENCLAVE ")
    # The port is not measured: only the host is named, though both changed.
    assert "changed since that run: --host localhost -> 127.0.0.1: only" in line
    assert "--port" not in line
    assert "the code (" not in line and "the environment (" not in line, line
    assert "Traceback" not in refused.log()
    # What measured the sealing run is public: options and digests, no secret.
    record = first.workdir / "secrets.sealed-measurement.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o644
    assert SEALED_VALUE not in record.read_text()
    # The same options again: the restart unseals.
    restarted = _restart(app_tar, tmp_path, env, port)
    try:
        restarted.wait_for("RA-TLS check passed")
        assert "restored from the sealed state" in restarted.log()
    finally:
        assert restarted.stop() == 0, restarted.log()


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
    assert restarted.exit_status() == 1, restarted.log()
    assert "cannot unseal" in read(restarted.err)
    assert "sealed under another key, or altered" in read(restarted.err)
    assert not restarted.marker.exists()


def test_sealed_needs_a_state_and_push_sets_an_earlier_one_aside(
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
    state = workdir / "secrets" / SEALED_STATE_NAME
    sealed = state.read_bytes()
    # Push again: a fresh provisioning, so the enclave must not find the old state.
    (tmp_path / "again").mkdir()
    again = start_enclave(
        app_tar, tmp_path / "again", env, "--workdir", str(workdir), "--force", port=port
    )
    try:
        assert "waiting for provisioning" in read(again.err)
        assert "restored" not in read(again.err)
        assert not state.exists()
        assert state.with_name(f"{SEALED_STATE_NAME}.previous").read_bytes() == sealed
        assert "is set aside as" in read(again.err)
    finally:
        assert again.stop() == 0, again.log()


def test_a_wrong_key_with_sealed_secrets_seals_nothing(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    code_key, code = encrypt_code(app_tar, tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("11" * 32 + "\n")
    enclave = start_enclave(code, tmp_path, env)
    try:
        refused = enclave.push("--sealed-secrets", str(sealed_file), "--code-key", str(wrong))
        assert refused.returncode == 1 and "422" in refused.stderr, refused.stderr
        assert not (enclave.workdir / "secrets" / SEALED_STATE_NAME).exists()
        accepted = enclave.push("--sealed-secrets", str(sealed_file), "--code-key", str(code_key))
        assert accepted.returncode == 0, accepted.stderr
        enclave.wait_for("serving https://")
        assert (enclave.workdir / "secrets" / SEALED_STATE_NAME).exists()
    finally:
        assert enclave.stop() == 0, enclave.log()


def test_pull_provisions_afresh_and_sealed_restarts_offline(
    app_tar: Path, tmp_path: Path, env: dict[str, str], sealed_file: Path
) -> None:
    """Replicas keep one command line, --provision pull: each start pulls what the server holds
    now (rotated secrets, the current policy) and reseals it; --provision sealed goes offline."""
    app_port, server_port = free_port(), free_port()
    pair = self_signed_pem(tmp_path, "server")
    args = pull_args(app_tar, tmp_path / "wd", app_port, server_port, pair[0])
    dry = subprocess.run(
        [*args, "--dry-run", "--json"], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    mrenclave = json.loads(dry.stdout)["mrenclave"]
    cert = tmp_path / "wd" / "cert.pem"
    for attempt, value in enumerate(("first-value", "rotated-value")):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        sealed_file.write_text(json.dumps({"SEALED": value}))
        server = serve_secrets(
            run, env, None, mrenclave, port=server_port, pair=pair,
            extra=("--sealed-secrets", str(sealed_file)),
        )  # fmt: skip
        err = run / "run.err"
        proc = subprocess.Popen([*args, "--force"], stdout=subprocess.DEVNULL,
                                stderr=err.open("w"), env=env)  # fmt: skip
        try:
            wait_for_line(proc, err, "RA-TLS check passed")
            assert https_get(app_port, cert, "/secret/SEALED") == ("200", value)
            assert "200 released" in read(server.err)
        finally:
            stop_process(proc)
            stop_process(server.proc)
    # No server now: the sealed restart serves the last value pulled.
    restart = [*args, "--force"]
    restart[restart.index("pull")] = "sealed"
    err = tmp_path / "sealed.err"
    proc = subprocess.Popen(restart, stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env)
    try:
        wait_for_line(proc, err, "RA-TLS check passed")
        assert https_get(app_port, cert, "/secret/SEALED") == ("200", "rotated-value")
    finally:
        stop_process(proc)


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
