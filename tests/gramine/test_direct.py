"""The product's own manifest under real Gramine: dry runs, ``mse-run --direct``, refusals."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.net import free_port, listening_addresses, openssl_served_certificate
from tests.processes import stop_process

from .conftest import ROOT

UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"
FLASK_REQUIREMENTS = {
    "requirements.txt": (ROOT / "examples" / "flask" / "requirements.txt").read_bytes()
}
# A fixed expiry, so every run here measures the same argv.
EXPIRY = str((int(time.time()) // 86400 + 30) * 86400)


def pack(files: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(files[name]))
    return path


def example_tar(name: str, path: Path) -> Path:
    directory = ROOT / "examples" / name
    return pack({f: (directory / f).read_bytes() for f in ("app.py", "requirements.txt")}, path)


def mse_run(bin_dir: Path, tar: Path, workdir: Path, *extra: str, port: int = 8443) -> list[str]:
    return [
        str(bin_dir / "mse-run"),
        *("--size", "1G", "--code", str(tar), "--host", "localhost"),
        *("--application", "app:app", "--uuid", UUID, "--self-signed", EXPIRY),
        *("--port", str(port), "--workdir", str(workdir)),
        *extra,
    ]


def dry_run(
    bin_dir: Path, tar: Path, workdir: Path, env: dict[str, str], port: int = 8443
) -> dict[str, object]:
    result = subprocess.run(
        [*mse_run(bin_dir, tar, workdir, port=port), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


@dataclass
class Direct:
    proc: subprocess.Popen[str]
    port: int
    mrenclave: str
    workdir: Path
    stderr: Path


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def start_direct(bin_dir: Path, tar: Path, tmp: Path, env: dict[str, str], port: int) -> Direct:
    tmp.mkdir(exist_ok=True)
    out, err = tmp / "direct.out", tmp / "direct.err"
    proc = subprocess.Popen(
        [*mse_run(bin_dir, tar, tmp / "wd", port=port), "--direct"],
        stdout=out.open("w"),
        stderr=err.open("w"),
        env=env,
        text=True,
    )
    deadline = time.monotonic() + 180
    while "RA-TLS check passed (DIRECT)" not in _read(err):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"mse-run --direct did not come up:\n{_read(out)}\n{_read(err)}")
        time.sleep(0.2)
    mrenclave = _read(out).splitlines()[0].split()[1]
    return Direct(proc, port, mrenclave, tmp / "wd", err)


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        stop_process(proc)


def check_served(direct: Direct, tmp: Path, env: dict[str, str], bin_dir: Path, body: str) -> None:
    """openssl fetches the certificate, curl trusts it, mse-verify pins the dry run's MRENCLAVE."""
    cert = openssl_served_certificate(direct.port, tmp / "served.pem")
    answer = subprocess.run(
        ["curl", "-sS", "--cacert", str(cert), f"https://localhost:{direct.port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert body in answer.stdout
    ca = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation" / "ca.pem"
    verified = subprocess.run(
        [
            str(bin_dir / "mse-verify"),
            f"https://localhost:{direct.port}",
            "--simulation-ca",
            str(ca),
            "--mrenclave",
            direct.mrenclave,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    found = json.loads(verified.stdout)
    assert found["mrenclave"] == direct.mrenclave
    # Checked against the simulation CA, but the measurement is the real one.
    assert (found["simulation"], found["measurement"]) == (True, "real")
    shown = subprocess.run(
        [
            str(bin_dir / "mse-verify"),
            f"https://localhost:{direct.port}",
            *("--simulation-ca", str(ca), "--mrenclave", direct.mrenclave),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "*** SIMULATION — NOT a real SGX enclave: signed by a local simulation CA ***" in (
        shown.stdout
    )
    assert f"MRENCLAVE   {direct.mrenclave} (real measurement, Gramine without SGX)\n" in (
        shown.stdout
    )
    assert "(simulated)" not in shown.stdout
    # A verifier pinned to another enclave refuses it.
    other = subprocess.run(
        [
            str(bin_dir / "mse-verify"),
            f"https://localhost:{direct.port}",
            *("--simulation-ca", str(ca), "--mrenclave", "00" * 32),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert other.returncode == 1


def stop(direct: Direct) -> int:
    direct.proc.send_signal(signal.SIGTERM)
    return direct.proc.wait(timeout=60)


def test_dry_run_is_gramines_measurement_and_stable(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    tar = example_tar("flask", tmp_path / "app.tar")
    bin_dir = runtime_venv / "bin"
    first = dry_run(bin_dir, tar, tmp_path / "one", env)
    second = dry_run(bin_dir, tar, tmp_path / "two", env)
    assert first["mode"] == "sgx" and first["measurement"] == "real"
    assert first["mrenclave"] == second["mrenclave"]
    view = subprocess.run(
        ["gramine-sgx-sigstruct-view", "--output-format=json", str(tmp_path / "one" / "mse.sig")],
        capture_output=True,
        text=True,
        check=True,
    )
    sigstruct = json.loads(view.stdout)
    assert sigstruct["mr_enclave"] == first["mrenclave"]
    assert sigstruct["mr_signer"] == first["mrsigner"]


def test_flagship_trusted_set_is_small(
    runtime_venv: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """Issue 9's goals for examples/flask in the image's layout: sizes, not timings."""
    tar = example_tar("flask", tmp_path / "app.tar")
    summary = dry_run(runtime_venv / "bin", tar, tmp_path / "wd", env)
    manifest = tmp_path / "wd" / "mse.manifest"
    assert isinstance(summary["trusted_files"], int) and isinstance(summary["trusted_bytes"], int)
    assert summary["trusted_files"] <= 1500
    assert summary["trusted_bytes"] <= 90_000_000
    assert manifest.stat().st_size <= 300_000
    uris = [f["uri"] for f in tomllib.loads(manifest.read_text())["sgx"]["trusted_files"]]
    for left_out in ("/tkinter/", "/idlelib/", "/ensurepip/", "/lib2to3/", "/site-packages/pip/"):
        assert not any(left_out in uri for uri in uris), left_out
    assert not any(uri.endswith(".a") or "/config-3" in uri for uri in uris)
    # Gramine's glibc is what the loader loads, so that is what is trusted.
    assert any(uri.endswith("/runtime/glibc/libc.so.6") for uri in uris)
    assert not any(uri.endswith("/x86_64-linux-gnu/libc.so.6") for uri in uris)
    # Named parts come back, and change the measurement.
    back = subprocess.run(
        [*mse_run(runtime_venv / "bin", tar, tmp_path / "wd2"), "--dry-run", "--include=pip"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert back.stdout.split()[1] != summary["mrenclave"]
    again = tomllib.loads((tmp_path / "wd2" / "mse.manifest").read_text())
    assert any("/site-packages/pip/" in f["uri"] for f in again["sgx"]["trusted_files"])


def test_flask_example_served_direct_from_a_venv_under_tmp(
    runtime_venv: Path,
    tmp_path: Path,
    env: dict[str, str],
    cleanup: list[subprocess.Popen[str]],
) -> None:
    assert runtime_venv.is_relative_to("/tmp"), "the point: a venv where the tmpfs is mounted"
    bin_dir = runtime_venv / "bin"
    tar = example_tar("flask", tmp_path / "app.tar")
    # The port and bind address are not measured: the dry run (SGX defaults, port 8443) and
    # --direct on any two ports (on 127.0.0.1, its default) are the same enclave.
    expected = dry_run(bin_dir, tar, tmp_path / "dry", env)["mrenclave"]
    for run in ("one", "two"):
        direct = start_direct(bin_dir, tar, tmp_path / run, env, free_port())
        cleanup.append(direct.proc)
        assert direct.mrenclave == expected
        assert listening_addresses(direct.port) == {"127.0.0.1"}
        stderr = _read(direct.stderr)
        assert "DIRECT: Gramine LibOS without SGX: no hardware isolation; the quote is " in stderr
        assert "throwaway key" in stderr and "/mse/secrets" in stderr
        # The image's venv holds no owner or test tools: nothing to warn about.
        assert "owner or test tools" not in stderr
        # mse-run's own output: the real MRENCLAVE, not tagged as simulated.
        assert "(simulated)" not in _read(tmp_path / run / "direct.out")
        check_served(direct, tmp_path / run, env, bin_dir, "Hello world")
        assert stop(direct) == 0, _read(direct.stderr)


def test_fastapi_example_served_direct(
    dev_bin: Path, tmp_path: Path, env: dict[str, str], cleanup: list[subprocess.Popen[str]]
) -> None:
    tar = example_tar("fastapi", tmp_path / "app.tar")
    port = free_port()
    expected = dry_run(dev_bin, tar, tmp_path / "dry", env, port)["mrenclave"]
    direct = start_direct(dev_bin, tar, tmp_path, env, port)
    cleanup.append(direct.proc)
    assert direct.mrenclave == expected
    check_served(direct, tmp_path, env, dev_bin, "Hello")
    assert stop(direct) == 0, _read(direct.stderr)


SEALING_APP = b"""\
import pathlib

from flask import Flask

SECRET = pathlib.Path("/mse/secrets/note")
SECRET.write_text("sealed hello")
app = Flask(__name__)


@app.get("/")
def read() -> str:
    return SECRET.read_text()
"""


def test_sealed_secrets_mount_works_with_a_throwaway_key(
    runtime_venv: Path,
    tmp_path: Path,
    env: dict[str, str],
    cleanup: list[subprocess.Popen[str]],
) -> None:
    bin_dir = runtime_venv / "bin"
    tar = pack({"app.py": SEALING_APP, **FLASK_REQUIREMENTS}, tmp_path / "app.tar")
    direct = start_direct(bin_dir, tar, tmp_path, env, free_port())
    cleanup.append(direct.proc)
    answer = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(direct.workdir / "cert.pem"),
            f"https://localhost:{direct.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert answer.stdout == "sealed hello"
    # On the host only Gramine's encrypted file: the plaintext never left the enclave.
    sealed = (direct.workdir / "secrets" / "note").read_bytes()
    assert sealed and b"sealed hello" not in sealed
    assert stop(direct) == 0, _read(direct.stderr)
