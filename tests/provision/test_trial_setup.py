"""What a trial needs, made by commands: ``mse-secrets dev-ca`` and ``mse-secrets simulation-ca``.

The files dev-ca writes are used for real: ``mse-secrets serve`` serves its server certificate to
curl (by name and by address), an enclave serves its app certificate once pushed its key, and a
pulling enclave trusts the server through its CA. ``simulation-ca`` makes the simulation CA on a
fresh HOME, so ``mse-secrets serve --simulation-ca`` starts before any enclave has run.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.net import free_port
from tests.pipeline.conftest import BIN, run_args
from tests.processes import stop_process

from .conftest import SECRET, UUID, https_get, read, serve_secrets, start_enclave, wait_for_line

MARK = "MSE DEV CA — FOR TRIALS ONLY"
FILES = {
    "ca.pem": 0o644,
    "server.pem": 0o644,
    "server.key": 0o600,
    "app-fullchain.pem": 0o644,
    "app.key": 0o600,
}


def mse_secrets(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mse-secrets"), *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def dev_ca(directory: Path, *extra: str) -> Path:
    made = mse_secrets("dev-ca", str(directory), *extra)
    assert made.returncode == 0, made.stderr
    return directory


def curl(url: str, cacert: Path) -> tuple[int, str, str]:
    """curl's exit status, the HTTP status and stderr: status 0 means it verified the server."""
    answer = subprocess.run(
        ["curl", "-sS", "--cacert", str(cacert), "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return answer.returncode, answer.stdout, answer.stderr


def test_dev_ca_writes_marked_files_with_private_keys(tmp_path: Path) -> None:
    made = mse_secrets("dev-ca", str(tmp_path / "trial"))
    assert made.returncode == 0, made.stderr
    trial = tmp_path / "trial"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in trial.iterdir()} == FILES
    assert stat.S_IMODE(trial.stat().st_mode) == 0o700
    assert "FOR TRIALS ONLY" in made.stdout.splitlines()[0]
    for name in FILES:
        assert str(trial / name) in made.stdout
    # The next commands, with these files and the address for the secrets server.
    assert f"--secrets-server https://127.0.0.1:8443 --secrets-server-ca {trial}/ca.pem" in (
        made.stdout
    )
    assert f"--tls-key {trial}/app.key" in made.stdout
    ca = x509.load_pem_x509_certificate((trial / "ca.pem").read_bytes())
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert 29 < lifetime.days <= 30
    for name in ("server.pem", "app-fullchain.pem"):
        leaf, root = x509.load_pem_x509_certificates((trial / name).read_bytes())
        assert root == ca
        leaf.verify_directly_issued_by(ca)
        for certificate in (leaf, root):
            organization = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            assert organization[0].value == MARK
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # Two keys: the app's goes to the enclave, which must not be able to pose as the server.
    assert (trial / "server.key").read_bytes() != (trial / "app.key").read_bytes()


def test_dev_ca_names_replace_the_defaults(tmp_path: Path) -> None:
    trial = dev_ca(tmp_path / "trial", "--name", "App.Example.com", "--name", "10.0.0.5",
                   "--name", "::1", "--days", "2")  # fmt: skip
    leaf = x509.load_pem_x509_certificates((trial / "app-fullchain.pem").read_bytes())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.example.com"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 2


def test_dev_ca_never_replaces_a_file(tmp_path: Path) -> None:
    trial = dev_ca(tmp_path / "trial")
    before = {p.name: p.read_bytes() for p in trial.iterdir()}
    again = mse_secrets("dev-ca", str(trial))
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{trial} already holds ca.pem, server.pem" in lines[0], lines
    assert {p.name: p.read_bytes() for p in trial.iterdir()} == before
    # One file of another run is enough: nothing is written beside it.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "app.key").write_text("someone's key\n")
    refused = mse_secrets("dev-ca", str(partial))
    assert refused.returncode == 2 and "already holds app.key;" in refused.stderr
    assert [p.name for p in partial.iterdir()] == ["app.key"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "not a host"), "--name 'not a host' is neither a DNS name nor an IP address"),
        (("--days", "0"), "--days 0: give 1 to 365 days"),
        (("--days", "400"), "--days 400: give 1 to 365 days"),
    ],
)
def test_dev_ca_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = mse_secrets("dev-ca", str(tmp_path / "trial"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "trial").exists()


def test_dev_ca_server_certificate_serves_curl_by_name_and_address(
    tmp_path: Path, env: dict[str, str]
) -> None:
    trial = dev_ca(tmp_path / "trial")
    server = serve_secrets(
        tmp_path, env, None, "11" * 32, pair=(trial / "server.pem", trial / "server.key")
    )
    try:
        for host in ("localhost", "127.0.0.1"):
            # curl verified the server (exit 0); the server then refused it (no enclave).
            assert curl(f"https://{host}:{server.port}/mse/secrets", trial / "ca.pem")[:2] == (
                0,
                "403",
            )
        # Only the dev CA's certificate is trusted that way: another CA's file is not.
        other = dev_ca(tmp_path / "other")
        status, _, error = curl(f"https://localhost:{server.port}/mse/secrets", other / "ca.pem")
        assert status != 0, error
    finally:
        stop_process(server.proc)


def test_dev_ca_app_certificate_pushed_and_served_to_curl(
    app_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    trial = dev_ca(tmp_path / "trial")
    enclave = start_enclave(
        app_tar, tmp_path, env, "--certificate", str(trial / "app-fullchain.pem"), self_signed=False
    )
    try:
        pushed = enclave.push("--tls-key", str(trial / "app.key"))
        assert pushed.returncode == 0, pushed.stderr
        enclave.wait_for("serving https://")
        for host in ("localhost", "127.0.0.1"):
            answer = subprocess.run(
                ["curl", "-sS", "--fail", "--cacert", str(trial / "ca.pem"),
                 f"https://{host}:{enclave.port}/"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert answer.stdout == "Hello from Flask in the enclave", answer.stderr
    finally:
        assert enclave.stop() == 0, enclave.log()


def test_simulation_ca_lets_the_secrets_server_start_before_any_enclave(
    app_tar: Path, tmp_path: Path, env: dict[str, str], secrets_file: Path
) -> None:
    # The documented order on a fresh machine: the CAs, MRENCLAVE, the server, the enclave.
    simulation = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation"
    trial = dev_ca(tmp_path / "trial")
    app_port, server_port = free_port(), free_port()

    def args(workdir: Path) -> list[str]:
        return [
            *run_args(app_tar, workdir, **{"--port": str(app_port), "--uuid": UUID}),
            "--simulation", "--provision", "pull",
            "--secrets-server", f"https://127.0.0.1:{server_port}",
            "--secrets-server-ca", str(trial / "ca.pem"),
        ]  # fmt: skip

    dry = subprocess.run(
        [*args(tmp_path / "dry"), "--dry-run", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    mrenclave = json.loads(dry.stdout)["mrenclave"]
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{mrenclave}"]\n')

    def serve_args(ca: Path) -> list[str]:
        return [
            "serve", "--policy", str(policy), "--secrets", str(secrets_file),
            "--cert", str(trial / "server.pem"), "--key", str(trial / "server.key"),
            "--bind", "127.0.0.1", "--port", str(server_port), "--simulation-ca", str(ca),
        ]  # fmt: skip

    # A dry run makes no simulation CA, so the server cannot start yet; the error says how.
    assert not simulation.exists()
    early = mse_secrets(*serve_args(simulation / "ca.pem"), env=env)
    assert early.returncode == 2
    assert "does not exist; create it with `mse-secrets simulation-ca`" in early.stderr

    made = mse_secrets("simulation-ca", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{simulation / 'ca.pem'}\n"
    ca = Path(made.stdout.strip())
    assert ca.is_file() and (simulation / "collateral" / "tcb_info.json").is_file()
    assert "created the simulation CA: NOT SGX" in made.stderr
    keys = {p.name: p.read_bytes() for p in simulation.iterdir() if p.is_file()}
    again = mse_secrets("simulation-ca", env=env)
    assert again.stdout == made.stdout and "using the simulation CA: NOT SGX" in again.stderr

    server_err = tmp_path / "serve.err"
    server = subprocess.Popen(
        [str(BIN / "mse-secrets"), *serve_args(ca)],
        stdout=subprocess.DEVNULL, stderr=server_err.open("w"), env=env,
    )  # fmt: skip
    err = tmp_path / "run.err"
    enclave: subprocess.Popen[bytes] | None = None
    try:
        wait_for_line(server, server_err, "serving", timeout=60)
        enclave = subprocess.Popen(
            args(tmp_path / "wd"), stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env
        )
        wait_for_line(enclave, err, "RA-TLS check passed")
        status, body = https_get(app_port, tmp_path / "wd" / "cert.pem", "/secret/API_KEY")
        assert (status, body) == ("200", SECRET)
        assert f"200 released to MRENCLAVE {mrenclave}" in read(server_err)
        verified = subprocess.run(
            [str(BIN / "mse-verify"), f"https://localhost:{app_port}", "--simulation-ca",
             str(ca), "--mrenclave", mrenclave],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
    finally:
        for proc in (enclave, server):
            if proc is not None:
                stop_process(proc)
    # The enclave signed with the PKI simulation-ca made: the same keys, nothing re-made.
    assert {p.name: p.read_bytes() for p in simulation.iterdir() if p.is_file()} == keys


def test_dev_ca_help_states_the_defaults_it_applies() -> None:
    from mse_base._internal.provision import devca

    shown = " ".join(mse_secrets("dev-ca", "--help").stdout.split())
    assert f"default {devca.DEFAULT_DAYS}, at most {devca.MAX_DAYS}" in shown
    assert f"default: {' and '.join(devca.DEFAULT_NAMES)}" in shown
