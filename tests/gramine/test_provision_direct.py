"""Provisioning under real Gramine (``mse-run --direct``): push, encrypted code, pull, SIGTERM.

The enclave is the product's own manifest in Gramine's LibOS: the secrets and the decrypted code
go to Gramine's tmpfs, the code tar is unpacked there, the wait for provisioning must see
SIGTERM through Gramine's signal injection, and the decrypted code's lines must stay out of the
console Gramine hands the host.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mse_base._internal.enclave.manifest import SEALED_STATE_NAME
from mse_base._internal.simulation.pki import ensure_simulation_pki
from tests.certs import ca_issued_pem, self_signed_pem
from tests.net import free_port
from tests.processes import stop_process
from tests.provision.tracebacks import FLASK_FILES, check_flask_log, fail_flask_app
from tests.slowclients import ATTACKER, PUSH_ATTACKERS, Tricklers

from .conftest import ROOT
from .test_direct import UUID, mse_run, pack

APP = (Path(__file__).resolve().parents[1] / "provision" / "secret_app.py").read_bytes()
SECRET = "direct-s3cr3t-41c9"


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        stop_process(proc)


def _start(
    args: list[str], tmp: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str, Path]:
    out, err = tmp / "direct.out", tmp / "direct.err"
    proc = subprocess.Popen(
        [*args, "--direct"], stdout=out.open("w"), stderr=err.open("w"), env=env, text=True
    )
    procs.append(proc)
    deadline = time.monotonic() + 180
    # A push enclave is ready once mse-run has verified its provisioning endpoint; a pull one
    # verifies only once it serves, so it is ready here as soon as it starts fetching.
    while not (
        ("waiting for provisioning" in _read(err) and "RA-TLS check passed" in _read(err))
        or "fetching secrets" in _read(err)
    ):
        assert proc.poll() is None and time.monotonic() < deadline, _read(out) + _read(err)
        time.sleep(0.2)
    mrenclave = _read(out).splitlines()[0].split()[1]
    return proc, mrenclave, err


def _wait_for(err: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while text not in _read(err):
        assert proc.poll() is None and time.monotonic() < deadline, _read(err)
        time.sleep(0.2)


def _curl(port: int, cert: Path, path: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(cert), f"https://localhost:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip


def _push(
    bin_dir: Path, port: int, mrenclave: str, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """``mse-secrets push`` from the image's venv, trusting the simulation CA."""
    ca = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation" / "ca.pem"
    return subprocess.run(
        [str(bin_dir / "mse-secrets"), "push", f"https://localhost:{port}", "--mrenclave",
         mrenclave, "--uuid", UUID, "--simulation-ca", str(ca), *extra],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_push_runs_encrypted_code_in_gramine(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    key, sealed = tmp_path / "code.key", tmp_path / "app.tar.enc"
    subprocess.run(
        [str(bin_dir / "mse-secrets"), "encrypt-code", str(tar), "--key-out", str(key),
         "-o", str(sealed)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"API_KEY": SECRET}))
    wrong = tmp_path / "wrong.key"
    wrong.write_text("11" * 32 + "\n")
    port = free_port()
    args = mse_run(bin_dir, sealed, tmp_path / "wd", "--provision", "push", port=port)
    proc, mrenclave, err = _start(args, tmp_path, env, procs)

    def push(*extra: str) -> subprocess.CompletedProcess[str]:
        return _push(bin_dir, port, mrenclave, env, "--secrets", str(secrets), *extra)

    refused = push("--code-key", str(wrong))
    assert refused.returncode == 1
    assert "422 'code_key' does not decrypt this enclave's code" in refused.stderr
    pushed = push("--code-key", str(key))
    assert pushed.returncode == 0, pushed.stderr + _read(err)
    # The simulation CA signed the quote, but the measurement is the real one.
    assert "*** SIMULATION — NOT a real SGX enclave" in pushed.stdout
    assert f"MRENCLAVE   {mrenclave} (real measurement, Gramine without SGX)\n" in pushed.stdout
    assert "(simulated)" not in pushed.stdout
    _wait_for(err, "serving https://", proc)
    assert _curl(port, tmp_path / "wd" / "cert.pem", "/secret/API_KEY") == SECRET
    again = push("--code-key", str(key))
    assert "409 already provisioned" in again.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert SECRET not in _read(err)


def test_sigterm_while_waiting_stops_the_enclave(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    args = mse_run(runtime_venv / "bin", tar, tmp_path / "wd", "--provision", "push",
                   "--provision-timeout", "3600", port=free_port())  # fmt: skip
    proc, _, err = _start(args, tmp_path, env, procs)
    proc.send_signal(signal.SIGTERM)
    # Far below the hour it would otherwise wait: the wait sees the signal.
    assert proc.wait(timeout=60) == 0
    assert "stopped before provisioning; the app was not started" in _read(err)


def test_slow_clients_do_not_lock_the_owner_out_in_gramine(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    """The endpoint takes a slow client's slot by shutting its socket down from another thread:
    Gramine must wake the thread blocked reading it, or the owner would wait for ever."""
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    port = free_port()
    args = mse_run(bin_dir, tar, tmp_path / "wd", "--provision", "push", port=port)
    proc, mrenclave, err = _start(args, tmp_path, env, procs)
    attack = Tricklers(port, ATTACKER, PUSH_ATTACKERS)
    try:
        attack.wait_until_live(16)
        started = time.monotonic()
        pushed = _push(bin_dir, port, mrenclave, env)
        assert pushed.returncode == 0, pushed.stderr + _read(err)
        assert time.monotonic() - started < 90
    finally:
        attack.close()
    _wait_for(err, "serving https://", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_pull_from_a_secrets_server_in_gramine(
    runtime_venv: Path,
    dev_bin: Path,
    tmp_path: Path,
    env: dict[str, str],
    procs: list[subprocess.Popen[str]],
) -> None:
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"API_KEY": SECRET}))
    cert, key = self_signed_pem(tmp_path, "owner")
    app_port, server_port = free_port(), free_port()
    # A name, resolved inside Gramine through the enclave's measured /etc (hosts, nsswitch.conf):
    # Gramine itself only makes up resolv.conf, and glibc without nsswitch.conf asks DNS first.
    pull = ("--provision", "pull", "--secrets-server", f"https://localhost:{server_port}",
            "--secrets-server-ca", str(cert))  # fmt: skip
    args = mse_run(bin_dir, tar, tmp_path / "wd", *pull, port=app_port)
    # The server and its CA are measured: the policy pins the MRENCLAVE they give.
    dry = subprocess.run(
        [*mse_run(bin_dir, tar, tmp_path / "dry", *pull, port=app_port), "--dry-run", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    mrenclave = json.loads(dry.stdout)["mrenclave"]
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{mrenclave}"]\n')
    pki = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation"
    ensure_simulation_pki(pki)  # what mse-run makes on first use; the server trusts it first
    serve_err = tmp_path / "serve.err"
    # The owner's side runs from the development venv: pyOpenSSL is not in the image's.
    server = subprocess.Popen(
        [str(dev_bin / "mse-secrets"), "serve", "--policy", str(policy), "--secrets", str(secrets),
         "--cert", str(cert), "--key", str(key), "--bind", "127.0.0.1", "--port",
         str(server_port), "--simulation-ca", str(pki / "ca.pem")],
        stdout=subprocess.DEVNULL, stderr=serve_err.open("w"), env=env, text=True,
    )  # fmt: skip
    procs.append(server)
    _wait_for(serve_err, "serving", server)
    proc, _, err = _start(args, tmp_path, env, procs)
    # mse-run saves the certificate (cert.pem) once it has verified the serving enclave.
    _wait_for(err, "RA-TLS check passed", proc)
    assert _curl(app_port, tmp_path / "wd" / "cert.pem", "/secret/API_KEY") == SECRET
    assert f"200 released to MRENCLAVE {mrenclave}" in _read(serve_err)
    assert "Name or service not known" not in _read(err)
    assert "which the enclave does not read" not in _read(err)  # localhost is in its /etc/hosts
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_a_sealed_restart_in_gramine(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    """Gramine's encrypted mount, keyed with mse-run's stand-in: sealed once, unsealed after a
    restart, by the same MRENCLAVE only."""
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    sealed = tmp_path / "sealed.json"
    sealed.write_text(json.dumps({"API_KEY": SECRET}))
    port, workdir = free_port(), tmp_path / "wd"
    first = tmp_path / "first"
    first.mkdir()
    proc, mrenclave, err = _start(
        mse_run(bin_dir, tar, workdir, "--provision", "push", port=port), first, env, procs
    )
    pushed = _push(bin_dir, port, mrenclave, env, "--sealed-secrets", str(sealed))
    assert pushed.returncode == 0, pushed.stderr + _read(err)
    _wait_for(err, "serving https://", proc)
    assert "sealed for restarts" in _read(err)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    state = workdir / "secrets" / SEALED_STATE_NAME
    assert SECRET.encode() not in state.read_bytes()  # Gramine's encrypted file format

    second = tmp_path / "second"
    second.mkdir()
    restart = mse_run(bin_dir, tar, workdir, "--provision", "sealed", "--force", port=port)
    proc = subprocess.Popen(
        [*restart, "--direct"], stdout=(second / "out").open("w"),
        stderr=(second / "err").open("w"), env=env, text=True,
    )  # fmt: skip
    procs.append(proc)
    _wait_for(second / "err", "RA-TLS check passed", proc)
    assert _read(second / "out").splitlines()[0].split()[1] == mrenclave
    assert "restored from the sealed state: 1 secret(s)" in _read(second / "err")
    assert _curl(port, workdir / "cert.pem", "/secret/API_KEY") == SECRET
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert SECRET not in _read(err) + _read(second / "err")


def test_a_ca_issued_certificate_in_gramine(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    """The measured chain reaches the bootstrap through Gramine's argv; the pushed key lands in
    Gramine's tmpfs; curl trusts the owner's CA, not RA-TLS."""
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": APP}, tmp_path / "app.tar")
    ca = self_signed_pem(tmp_path, "owner-ca", common_name="Owner CA", dns=(), ips=())
    chain, key = ca_issued_pem(tmp_path, "app", ca)
    port = free_port()
    args = mse_run(bin_dir, tar, tmp_path / "wd", "--provision", "push", "--certificate",
                   str(chain), port=port)  # fmt: skip
    at = args.index("--self-signed")
    del args[at : at + 2]
    proc, mrenclave, err = _start(args, tmp_path, env, procs)
    pushed = _push(bin_dir, port, mrenclave, env, "--tls-key", str(key))
    assert pushed.returncode == 0, pushed.stderr + _read(err)
    _wait_for(err, "(DIRECT, --certificate)", proc)
    assert _curl(port, ca[0], "/") == "Hello from Flask in the enclave"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_encrypted_code_failing_in_gramine_logs_no_source_line(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    """The app fails in every way tests/provision/test_tracebacks.py tries with Flask; the
    decrypted code stays readable in Gramine's tmpfs throughout, yet no line of it is printed."""
    bin_dir = runtime_venv / "bin"
    tar = pack({name: text.encode() for name, text in FLASK_FILES.items()}, tmp_path / "app.tar")
    key, sealed = tmp_path / "code.key", tmp_path / "app.tar.enc"
    subprocess.run(
        [str(bin_dir / "mse-secrets"), "encrypt-code", str(tar), "--key-out", str(key),
         "-o", str(sealed)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    port = free_port()
    proc, mrenclave, err = _start(
        mse_run(bin_dir, sealed, tmp_path / "wd", "--provision", "push", port=port),
        tmp_path,
        env,
        procs,
    )
    pushed = _push(bin_dir, port, mrenclave, env, "--code-key", str(key))
    assert pushed.returncode == 0, pushed.stderr + _read(err)
    _wait_for(err, "serving https://", proc)
    fail_flask_app(port, tmp_path / "wd" / "cert.pem")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    check_flask_log(_read(tmp_path / "direct.out") + _read(err))


def test_serve_without_pyopenssl_says_to_install_it_apart(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """The image's venv has no pyOpenSSL, and must not get it: mse-secrets serve there says to
    install it in an environment of its own, from where the toolkit came (this clone's path:
    the image's venv installs it from the directory)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{"00" * 32}"]\n')
    cert, key = self_signed_pem(tmp_path, "owner")
    result = subprocess.run(
        [str(runtime_venv / "bin" / "mse-secrets"), "serve", "--policy", str(policy),
         "--cert", str(cert), "--key", str(key), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        "mse-secrets: error: mse-secrets serve needs pyOpenSSL (to accept self-signed RA-TLS "
        "client certificates): install it apart from any environment an enclave measures (there "
        "it would change MRENCLAVE), e.g. python3 -m venv ~/mse-owner && ~/mse-owner/bin/pip "
        f"install '{ROOT}[serve]', then run ~/mse-owner/bin/mse-secrets serve"
    ]
