"""Sealed secrets are never read under a mode that did not seal them (secrets.sealed-by).

mse-run checks for Gramine before it looks at secrets/, so the ``--direct`` cases need Gramine
(marked ``gramine``: skipped without it); the ``--simulation`` ones run anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.net import free_port

from .conftest import FLASK_APP, make_tar, run_args


def _refused(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _sealed_workdir(tmp_path: Path, mode: str | None) -> Path:
    """A work directory as an earlier run under ``mode`` left it, with one sealed file."""
    workdir = tmp_path / "wd"
    (workdir / "secrets").mkdir(parents=True)
    (workdir / "secrets" / "note").write_bytes(b"sealed bytes")
    if mode is not None:
        (workdir / "secrets.sealed-by").write_text(f"{mode}\n")
    return workdir


@pytest.mark.parametrize(
    ("earlier", "flag"),
    [("sgx", "--simulation"), pytest.param("simulation", "--direct", marks=pytest.mark.gramine)],
)
def test_secrets_sealed_under_another_mode_are_refused(
    tmp_path: Path, env: dict[str, str], home: Path, earlier: str, flag: str
) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})
    workdir = _sealed_workdir(tmp_path, earlier)
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    args = [*run_args(tar, workdir, **{"--port": str(free_port())}), flag, "--force"]
    line = _refused(args, env)
    name = {"sgx": "SGX", "simulation": "--simulation"}[earlier]
    assert line.startswith(f"mse-run: error: --workdir {workdir}: secrets/ holds files sealed "), (
        line
    )
    assert name in line and f"move {workdir / 'secrets'} away" in line, line
    # Refused before --force cleared anything, and nothing written outside the work directory.
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before
    assert (workdir / "secrets" / "note").read_bytes() == b"sealed bytes"
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("mode", [pytest.param("direct", marks=pytest.mark.gramine), "simulation"])
def test_secrets_whose_stand_in_key_is_gone_are_refused(
    tmp_path: Path, env: dict[str, str], mode: str
) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})
    workdir = _sealed_workdir(tmp_path, mode)
    args = [*run_args(tar, workdir, **{"--port": str(free_port())}), f"--{mode}", "--force"]
    line = _refused(args, env)
    assert "the stand-in sealing key they need (sealing-root.key) is gone" in line, line


def _sealed_by_a_simulation_run(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Runs the app under --simulation until it is ready, then stops it; returns its command."""
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})
    args = [*run_args(tar, tmp_path / "wd", **{"--port": str(free_port())}), "--simulation"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        # Ready once verified: a stop before that discards the (fresh) work directory.
        for line in proc.stderr:
            if "RA-TLS check passed" in line:
                break
        else:
            pytest.fail("the enclave never became ready")
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    return args


def test_same_mode_reuses_its_secrets_and_records_the_mode(
    tmp_path: Path, env: dict[str, str]
) -> None:
    args = _sealed_by_a_simulation_run(tmp_path, env)
    workdir = tmp_path / "wd"
    assert (workdir / "secrets.sealed-by").read_text() == "simulation\n"
    (workdir / "secrets" / "note").write_text("kept")
    # The same mode again (--force): accepted, the secret kept; a dry run checks nothing.
    dry = subprocess.run(
        [*args, "--force", "--dry-run"], capture_output=True, text=True, env=env, check=False
    )
    assert dry.returncode == 0, dry.stderr
    assert (workdir / "secrets" / "note").read_text() == "kept"


@pytest.mark.gramine
def test_another_mode_is_refused_until_the_secrets_are_gone(
    tmp_path: Path, env: dict[str, str]
) -> None:
    args = _sealed_by_a_simulation_run(tmp_path, env)
    workdir = tmp_path / "wd"
    (workdir / "secrets" / "note").write_text("kept")
    # Another mode on the same directory is refused; emptied, it is accepted again.
    assert "under --simulation" in _refused([*args[:-1], "--direct", "--force"], env)
    assert (workdir / "secrets" / "note").read_text() == "kept"
    shutil.rmtree(workdir / "secrets")
    (workdir / "secrets").mkdir()
    ok = subprocess.run(
        [*args[:-1], "--direct", "--force", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_what_changed_since_the_sealing_run_is_named_as_the_user_gives_it(tmp_path: Path) -> None:
    """The record's options back in mse-run's terms: PEM options by certificate, flags by
    given or not, repeated options as lists; the code and the environment only as digests."""
    from mse_base._internal.enclave.sealing import Measurement, changes_between
    from tests.certs import self_signed_pem

    ca, _ = self_signed_pem(tmp_path, "ca", common_name="Owner CA")
    other, _ = self_signed_pem(tmp_path, "other", common_name="Owner CA")
    fingerprint = subprocess.run(
        ["openssl", "x509", "-in", str(other), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout.split("=")[1].replace(":", "").lower()[:16]  # fmt: skip
    options = (
        ("--size", "1G"),
        ("--port", "8443"),
        ("--provision", "pull"),
        ("--secrets-server-ca-pem", ca.read_text()),
        ("--encrypted-code", None),
        ("--san", "a.example"),
    )
    sealing = Measurement("aa" * 32, "direct", options, "c1", "e1", "1.9")
    changed = (
        ("--size", "2G"),
        ("--port", "8443"),
        ("--debug", None),
        ("--provision", "pull"),
        ("--secrets-server-ca-pem", other.read_text()),
        ("--san", "a.example"),
        ("--san", "b.example"),
    )
    now = Measurement("bb" * 32, "direct", changed, "c2", "e1", "1.9")
    found = changes_between(sealing, now)
    assert found[0] == "--size 1G -> 2G"
    assert found[1].startswith("--secrets-server-ca CN=Owner CA (SHA-256 ")
    assert found[1].endswith(f" -> CN=Owner CA (SHA-256 {fingerprint})")
    assert found[2:] == [
        "--code encrypted -> plain",
        "--san a.example -> a.example, b.example",
        "--debug not given -> given",
        "the code (the --code tar's files)",
    ]
    # Only the environment: named, with Gramine's versions when they differ.
    same = Measurement("bb" * 32, "direct", options, "c1", "e2", "1.9")
    assert changes_between(sealing, same) == [
        "the environment (Python, its libraries, the venv's packages or mse-base: run the image "
        "that sealed it)"
    ]
    newer = Measurement("bb" * 32, "direct", options, "c1", "e2", "1.10")
    assert changes_between(sealing, newer) == [
        "the environment (Gramine 1.9 -> 1.10: run the image that sealed it)"
    ]
    # --include changes the trusted set itself: the environment is not blamed for it.
    included = Measurement("bb" * 32, "direct", (*options, ("--include", "pip")), "c1", "e2", "1.9")
    assert changes_between(sealing, included) == ["--include not given -> pip"]
    # A record that is not one words nothing.
    assert Measurement.from_json('{"options": 3}') is None
    assert Measurement.from_json(sealing.to_json().replace('"direct"', '"other"')) is None
    assert changes_between(sealing, replace(now, options=(("--subject", "CN=a\nb"),)))[-2:] == [
        "--subject not given -> CN=a?b",
        "the code (the --code tar's files)",
    ]
    assert Measurement.from_json(sealing.to_json()) == sealing
