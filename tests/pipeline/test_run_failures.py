"""mse-run's failures leave no work directory behind and say which input is wrong, in one line."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.net import free_port

from .conftest import FLASK_APP, make_tar, run_args


def _args(tar: Path, workdir: Path | None, *extra: str, **options: str) -> list[str]:
    args = run_args(tar, workdir or Path("unused"), **options)
    if workdir is None:
        at = args.index("--workdir")
        del args[at : at + 2]
    return [*args, "--simulation", *extra]


def _one_line_failure(args: list[str], env: dict[str, str], code: int) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mse-run: error: ")
    return lines[0]


def _default_workdir(home: Path, deployment: str) -> Path:
    return home / ".state" / "mse" / deployment


# --- --code ----------------------------------------------------------------------------------


def test_code_not_a_tar(tmp_path: Path, env: dict[str, str], home: Path) -> None:
    code = tmp_path / "app.tar"
    code.write_text("this is not a tar file at all")
    line = _one_line_failure(_args(code, tmp_path / "wd", "--dry-run"), env, 2)
    assert line == f"mse-run: error: --code {code}: not a tar or tar.gz archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.tar", "home"]
    assert list(home.iterdir()) == []


def test_code_truncated_gzip(tmp_path: Path, env: dict[str, str], home: Path) -> None:
    whole = make_tar(tmp_path / "whole.tar", {"app.py": FLASK_APP, "big.txt": "x" * 100_000})
    packed = gzip.compress(whole.read_bytes())
    code = tmp_path / "app.tar.gz"
    code.write_bytes(packed[: len(packed) // 2])
    line = _one_line_failure(_args(code, tmp_path / "wd", "--dry-run"), env, 2)
    assert f"--code {code}" in line and "rebuild the tar" in line
    assert not (tmp_path / "wd").exists()
    assert list(home.iterdir()) == []


def test_code_directory(tmp_path: Path, env: dict[str, str], home: Path) -> None:
    code = tmp_path / "flask"
    code.mkdir()
    (code / "app.py").write_text(FLASK_APP)
    line = _one_line_failure(_args(code, tmp_path / "wd", "--dry-run"), env, 2)
    assert line == (
        f"mse-run: error: --code {code} is a directory; pack it first: tar -C {code} -cf app.tar ."
    )
    assert not (tmp_path / "wd").exists()
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("dry_run", [True, False])
def test_code_empty_tar(tmp_path: Path, env: dict[str, str], home: Path, dry_run: bool) -> None:
    code = make_tar(tmp_path / "empty.tar", {})
    extra = ["--dry-run"] if dry_run else ["--port", str(free_port())]
    line = _one_line_failure(_args(code, None, *extra), env, 2)
    assert f"--code {code} contains no files" in line
    # Refused before anything was written: not even the default work directory's parents.
    assert list(home.iterdir()) == []


# --- the default work directory --------------------------------------------------------------


def test_dry_runs_leave_nothing_and_the_real_run_follows(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], home: Path
) -> None:
    deployment = str(uuid.uuid4())
    # One port throughout: the real run needs a free one (the dry runs measure none).
    port = str(free_port())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**env, "TMPDIR": str(scratch)}
    first = subprocess.run(
        _args(flask_tar, None, "--dry-run", **{"--uuid": deployment, "--port": port}),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    mrenclave = first.stdout.split()[1]
    second = subprocess.run(
        _args(flask_tar, None, "--dry-run", "--json", **{"--uuid": deployment, "--port": port}),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    summary = json.loads(second.stdout)
    assert summary["mrenclave"] == mrenclave
    assert summary["workdir"] is None
    assert list(scratch.iterdir()) == []
    assert not (home / ".state").exists()
    # The real run then starts in the default work directory, with no --force.
    err = tmp_path / "run.err"
    run = subprocess.Popen(
        _args(flask_tar, None, **{"--uuid": deployment, "--port": port}),
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "RA-TLS check passed" not in err.read_text():
            assert run.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
    finally:
        run.terminate()
        stdout, _ = run.communicate(timeout=30)
    assert run.returncode == 0, err.read_text()
    assert stdout.split()[1] == mrenclave
    assert (_default_workdir(home, deployment) / "cert.pem").is_file()


def test_not_empty_default_workdir_is_named_as_such(
    flask_tar: Path, env: dict[str, str], home: Path
) -> None:
    deployment = str(uuid.uuid4())
    workdir = _default_workdir(home, deployment)
    workdir.mkdir(parents=True)
    (workdir / "left-over").write_text("x")
    args = _args(flask_tar, None, "--port", str(free_port()), **{"--uuid": deployment})
    line = _one_line_failure(args, env, 2)
    assert line.startswith(f"mse-run: error: the default work directory ({workdir}) is not empty")
    assert "--force" in line and "--workdir" in line
    assert "--workdir " + str(workdir) not in line
    assert [p.name for p in workdir.iterdir()] == ["left-over"]


def test_failed_run_removes_the_work_directory_it_created(
    tmp_path: Path, env: dict[str, str], home: Path
) -> None:
    tar = make_tar(
        tmp_path / "req.tar",
        {"app.py": FLASK_APP, "requirements.txt": "surely-not-installed-pkg==1.0\n"},
    )
    deployment = str(uuid.uuid4())
    args = _args(tar, None, "--port", str(free_port()), **{"--uuid": deployment})
    line = _one_line_failure(args, env, 1)
    assert "surely-not-installed-pkg" in line
    # Neither the work directory nor the parents this run made.
    assert not (home / ".state").exists()


def test_enclave_that_never_served_leaves_no_work_directory(
    tmp_path: Path, env: dict[str, str], home: Path
) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})
    deployment = str(uuid.uuid4())
    args = _args(
        tar,
        None,
        "--port",
        str(free_port()),
        **{"--uuid": deployment, "--application": "nomodule:app"},
    )
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "nomodule" in result.stderr and "Traceback" not in result.stderr
    assert "RA-TLS check passed" not in result.stderr
    assert not (home / ".state").exists()
    # So the corrected run needs no --force.
    fixed = subprocess.run(
        _args(tar, None, "--dry-run", **{"--uuid": deployment}),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert fixed.returncode == 0, fixed.stderr


def test_failed_run_empties_an_existing_empty_workdir(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(
        tmp_path / "req.tar",
        {"app.py": FLASK_APP, "requirements.txt": "surely-not-installed-pkg==1.0\n"},
    )
    workdir = tmp_path / "wd"
    workdir.mkdir()
    _one_line_failure(_args(tar, workdir, "--dry-run"), env, 1)
    assert workdir.is_dir() and list(workdir.iterdir()) == []


def test_failed_forced_run_keeps_what_was_there(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    workdir = tmp_path / "wd"
    secrets = workdir / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "sealed").write_text("keep me")
    bad = make_tar(
        tmp_path / "req.tar",
        {"app.py": FLASK_APP, "requirements.txt": "surely-not-installed-pkg==1.0\n"},
    )
    _one_line_failure(_args(bad, workdir, "--dry-run", "--force"), env, 1)
    assert (secrets / "sealed").read_text() == "keep me"


# --- a work directory that cannot be created -------------------------------------------------


def test_workdir_cannot_be_created(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    line = _one_line_failure(_args(flask_tar, Path("/proc/forbidden"), "--dry-run"), env, 2)
    assert line == (
        "mse-run: error: --workdir /proc/forbidden: cannot use it (No such file or directory); "
        "choose a writable directory"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _one_line_failure(_args(flask_tar, blocker / "wd", "--dry-run"), env, 2)
    assert f"--workdir {blocker / 'wd'}: cannot use it (Not a directory)" in line


def test_xdg_state_home_cannot_be_used(flask_tar: Path, env: dict[str, str]) -> None:
    deployment = str(uuid.uuid4())
    args = _args(flask_tar, None, "--port", str(free_port()), **{"--uuid": deployment})
    line = _one_line_failure(args, {**env, "XDG_STATE_HOME": "/proc/nope"}, 2)
    assert line.startswith(
        f"mse-run: error: the default work directory (/proc/nope/mse/{deployment}) cannot be "
        "created (No such file or directory)"
    )
    assert "XDG_STATE_HOME" in line and "--workdir" in line


# Started at import: multiprocessing's spawn and forkserver start their process through
# _posixsubprocess.fork_exec, which raises no audit event. The child would leave its mark.
MULTIPROCESSING_APP = """\
import multiprocessing
import pathlib

ctx = multiprocessing.get_context("{method}")
child = ctx.Process(target=pathlib.Path("{mark}").touch)
child.start()
child.join()
app = None
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_is_refused_in_simulation_as_in_the_enclave(
    tmp_path: Path, env: dict[str, str], method: str
) -> None:
    mark = tmp_path / "child-ran"
    tar = make_tar(
        tmp_path / "app.tar", {"app.py": MULTIPROCESSING_APP.format(method=method, mark=mark)}
    )
    args = _args(tar, tmp_path / "wd", "--port", str(free_port()))
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert "SubprocessForbidden: the enclave cannot start processes (_posixsubprocess" in line
    assert "sys.disallow_subprocesses" in line
    assert not mark.exists()
