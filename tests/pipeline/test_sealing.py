"""Sealed secrets are never read under a mode that did not seal them (secrets.sealed-by).

mse-run checks for Gramine before it looks at secrets/, so the ``--direct`` cases need Gramine
(marked ``gramine``: skipped without it); the ``--simulation`` ones run anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
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
