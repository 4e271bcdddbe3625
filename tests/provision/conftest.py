"""Enclaves started with ``mse-run --simulation --provision push`` as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mse_base._internal.dcap.collateral import Collateral
from mse_base._internal.simulation.pki import SimulationQuoteProvider
from mse_base.verify import Policy, Verifier
from tests.certs import self_signed_pem
from tests.net import free_port
from tests.pipeline import conftest as pipeline
from tests.pipeline.conftest import BIN, make_tar, run_args
from tests.processes import stop_process

# The isolated HOME / XDG tree of the pipeline tests, as fixtures here too.
home = pipeline.home
env = pipeline.env

UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"
APP_SOURCE = (Path(__file__).parent / "secret_app.py").read_text()
SECRET = "s3cr3t-7f1e9a-do-not-log"


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@dataclass
class Enclave:
    proc: subprocess.Popen[str]
    port: int
    mrenclave: str
    workdir: Path
    out: Path
    err: Path
    env: dict[str, str]
    marker: Path

    @property
    def ca(self) -> Path:
        return Path(self.env["XDG_CONFIG_HOME"]) / "mse" / "simulation" / "ca.pem"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def log(self) -> str:
        return read(self.out) + read(self.err)

    def requests_seen(self) -> int:
        """Provisioning requests the enclave logged (it logs every one it reads)."""
        return read(self.err).count("provisioning request from")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in read(self.err):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from mse-run:\n{self.log()}")
            time.sleep(0.1)

    def verifier(self, mrenclave: str | None = None) -> Verifier:
        return Verifier(
            collateral=Collateral.from_directory(self.ca.parent / "collateral"),
            policy=Policy(mrenclave=frozenset({bytes.fromhex(mrenclave or self.mrenclave)})),
            trust_root=x509.load_pem_x509_certificate(self.ca.read_bytes()),
            simulation=True,
        )

    def push(self, *extra: str, mrenclave: str | None = None) -> subprocess.CompletedProcess[str]:
        args = [
            str(BIN / "mse-secrets"),
            "push",
            self.url,
            "--mrenclave",
            mrenclave or self.mrenclave,
            "--uuid",
            UUID,
            "--simulation-ca",
            str(self.ca),
            *extra,
        ]
        return subprocess.run(
            args, capture_output=True, text=True, env=self.env, timeout=120, check=False
        )

    def exit_status(self, timeout: float = 120) -> int:
        """The status of an enclave expected to exit by itself; stopped (and failed) if not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise AssertionError(f"mse-run did not exit:\n{self.log()}") from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def start_enclave(
    code: Path,
    tmp: Path,
    env: dict[str, str],
    *extra: str,
    ready: bool = True,
    port: int | None = None,
    provision: str = "push",
    ready_line: str = "RA-TLS check passed",
    self_signed: bool = True,
) -> Enclave:
    port = port or free_port()
    out, err, marker = tmp / "run.out", tmp / "run.err", tmp / "app-imported"
    workdir = tmp / "wd"
    args = [
        *run_args(
            code,
            workdir,
            **{
                "--port": str(port),
                "--uuid": UUID,
                **({} if self_signed else {"--self-signed": None}),
            },
        ),
        "--simulation",
        "--provision",
        provision,
        *extra,
    ]
    proc = subprocess.Popen(
        args,
        stdout=out.open("w"),
        stderr=err.open("w"),
        env={**env, "MSE_TEST_MARKER": str(marker)},
        text=True,
    )
    enclave = Enclave(proc, port, "", workdir, out, err, env, marker)
    if ready:
        try:
            enclave.wait_for(ready_line)
        except BaseException:
            stop_process(proc)
            raise
        enclave.mrenclave = read(out).splitlines()[0].split()[1]
    return enclave


@pytest.fixture
def app_tar(tmp_path: Path) -> Path:
    return make_tar(tmp_path / "app.tar", {"app.py": APP_SOURCE})


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"API_KEY": SECRET, "DB": {"user": "app", "port": 5432}}))
    return path


@pytest.fixture
def enclave(app_tar: Path, tmp_path: Path, env: dict[str, str]) -> Iterator[Enclave]:
    running = start_enclave(app_tar, tmp_path, env)
    yield running
    if running.proc.poll() is None:
        stop_process(running.proc)


@dataclass
class SecretsServer:
    proc: subprocess.Popen[str]
    port: int
    ca: Path
    err: Path
    pki: Path


def serve_secrets(
    tmp: Path,
    env: dict[str, str],
    secrets_file: Path | None,
    mrenclave: str | None = None,
    *,
    policy: str | None = None,
    port: int | None = None,
    pair: tuple[Path, Path] | None = None,
    code_key: Path | None = None,
    extra: tuple[str, ...] = (),
) -> SecretsServer:
    """A running ``mse-secrets serve`` whose policy admits ``mrenclave`` (or is ``policy``)."""
    pki = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation"
    SimulationQuoteProvider(mrenclave=b"\0" * 32, mrsigner=b"\0" * 32, directory=pki)  # the PKI
    cert, key = pair or self_signed_pem(tmp, "server")
    policy_file = tmp / "policy.toml"
    policy_file.write_text(policy or f'mrenclave = ["{mrenclave}"]\n')
    port = port or free_port()
    err = tmp / "serve.err"
    proc = subprocess.Popen(
        [str(BIN / "mse-secrets"), "serve", "--policy", str(policy_file),
         *(["--secrets", str(secrets_file)] if secrets_file else []),
         "--cert", str(cert), "--key", str(key), "--bind", "127.0.0.1",
         "--port", str(port), "--simulation-ca", str(pki / "ca.pem"),
         *(["--code-key", str(code_key)] if code_key else []), *extra],
        stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "serving" not in read(err):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"mse-secrets serve did not start:\n{read(err)}")
        time.sleep(0.1)
    return SecretsServer(proc, port, cert, err, pki)


def pull_args(app_tar: Path, workdir: Path, app_port: int, server_port: int, ca: Path) -> list[str]:
    return [
        *run_args(app_tar, workdir, **{"--port": str(app_port), "--uuid": UUID}),
        "--simulation", "--provision", "pull", "--secrets-server",
        f"https://localhost:{server_port}", "--secrets-server-ca", str(ca),
    ]  # fmt: skip


def encrypt_code(tar: Path, tmp: Path) -> tuple[Path, Path]:
    """``mse-secrets encrypt-code`` as the owner runs it: the key file and the encrypted tar."""
    key, encrypted = tmp / "code.key", tmp / "app.tar.enc"
    result = subprocess.run(
        [str(BIN / "mse-secrets"), "encrypt-code", str(tar), "--key-out", str(key),
         "-o", str(encrypted)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return key, encrypted


def wait_for_line(proc: subprocess.Popen[Any], err: Path, text: str, timeout: float = 120) -> None:
    """Wait until ``text`` is in the process's stderr file; stop it and fail if it exits or
    the time runs out first."""
    deadline = time.monotonic() + timeout
    while text not in read(err):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"no {text!r}:\n{read(err)}")
        time.sleep(0.1)


def https_get(port: int, cacert: Path, path: str) -> tuple[str, str]:
    """``curl --cacert`` on https://localhost:``port``: the status code and the body."""
    answer = subprocess.run(
        ["curl", "-sS", "--cacert", str(cacert), "-w", "\n%{http_code}",
         f"https://localhost:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    body, _, status = answer.stdout.rpartition("\n")
    return status, body
