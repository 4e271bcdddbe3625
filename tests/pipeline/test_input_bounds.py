"""No input can hang mse-run or fill its memory: the code tar, requirements.txt, the signing key
and the simulation state are each refused, in one line, when hostile.

mse-run runs as a subprocess with a timeout; library calls run under :func:`tests.bounded.within`,
so a hang fails its test instead of stalling the suite.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from mse_base._internal.enclave import codetar, pipeline
from mse_base._internal.enclave.requirements import MAX_REQUIREMENTS_SIZE, check_requirements
from mse_base._internal.runtime import bootstrap
from mse_base.errors import UsageError
from tests.bounded import DEADLINE, within

from .conftest import FLASK_APP, make_deployment, make_tar, run_args


def _mse_run_fails(args: list[str], env: dict[str, str]) -> str:
    """The one error line of an mse-run that must fail with a usage error (exit 2)."""
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=DEADLINE, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mse-run: error: "), result.stderr
    return lines[0]


def _dry_run(tar: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [*run_args(tar, tmp_path / "wd"), "--simulation", "--dry-run", *extra]


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _gzip(path: Path, *parts: bytes | int) -> Path:
    """A .tar.gz of ``parts``: bytes as they are, an int as that many zero bytes (cheap to
    compress, so a few hundred kB of gzip can stand for gigabytes)."""
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        for part in parts:
            if isinstance(part, bytes):
                handle.write(part)
                continue
            for start in range(0, part, len(zeros)):
                handle.write(zeros[: min(len(zeros), part - start)])
    return path


# --- member names ------------------------------------------------------------------------------


def test_mse_run_refuses_a_member_with_a_control_character(
    tmp_path: Path, env: dict[str, str]
) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP, "bad\x01name.py": "x = 1\n"})
    line = _mse_run_fails(_dry_run(tar, tmp_path), env)
    # Shown escaped: the raw byte would reach the terminal otherwise.
    assert "member 'bad\\x01name.py' has a control character in its name" in line
    assert "\x01" not in line
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("new\nline.py", "new\\nline.py"),
        ("esc\x1b[31m.py", "esc\\x1b[31m.py"),
        ("del\x7f.py", "del\\x7f.py"),
        ("c1\x9b.py", "c1\\x9b.py"),
    ],
    ids=["newline", "escape", "delete", "c1-csi"],
)
def test_control_characters_in_names_are_refused_and_escaped(
    tmp_path: Path, name: str, shown: str
) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": "x = 1\n", name: "y = 2\n"})
    with within(), pytest.raises(UsageError) as caught:
        codetar.unpack_code(tar, tmp_path / "code")
    assert f"member '{shown}' has a control character in its name" in str(caught.value)
    assert not (tmp_path / "code").exists()


@pytest.mark.parametrize(
    ("name", "shown", "why"),
    [
        ("app\u202eyp.txt", "app\\u202eyp.txt", "an invisible formatting character"),
        ("zero\u200bwidth.py", "zero\\u200bwidth.py", "an invisible formatting character"),
        ("line\u2028sep.py", "line\\u2028sep.py", "a line or paragraph separator"),
        ("para\u2029sep.py", "para\\u2029sep.py", "a line or paragraph separator"),
    ],
    ids=["right-to-left-override", "zero-width-space", "line-separator", "paragraph-separator"],
)
def test_formatting_and_separator_characters_in_names_are_refused_and_escaped(
    tmp_path: Path, name: str, shown: str, why: str
) -> None:
    # U+202E shows "app\u202eyp.txt" as "apptxt.py"; U+2028/U+2029 end a line for many viewers.
    tar = make_tar(tmp_path / "app.tar", {"app.py": "x = 1\n", name: "y = 2\n"})
    with within(), pytest.raises(UsageError) as caught:
        codetar.unpack_code(tar, tmp_path / "code")
    message = str(caught.value)
    assert f"member '{shown}' has {why} in its name" in message
    assert name not in message and message.isprintable()
    assert not (tmp_path / "code").exists()


@pytest.mark.parametrize("target", ["app\r.py", "app\u202eyp.txt"], ids=["control", "override"])
def test_a_link_target_with_a_control_or_formatting_character_is_refused(
    tmp_path: Path, target: str
) -> None:
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("app.py")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("alias.py")
        link.type, link.linkname = tarfile.SYMTYPE, target
        archive.addfile(link)
    with within(), pytest.raises(UsageError, match=r"member 'alias\.py' is a link whose target"):
        codetar.inspect_code(path)


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_a_name_that_is_not_utf8_is_refused_with_its_bytes_escaped(
    tmp_path: Path, tar_format: int
) -> None:
    path = tmp_path / "latin1.tar"
    # Written as bytes: "café.py" in Latin-1 (0xe9 alone is not UTF-8).
    with tarfile.open(
        path, "w", format=tar_format, encoding="utf-8", errors="surrogateescape"
    ) as archive:
        info = tarfile.TarInfo(b"caf\xe9.py".decode("utf-8", "surrogateescape"))
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with within(), pytest.raises(UsageError) as caught:
        codetar.inspect_code(path)
    assert "member 'caf\\xe9.py' has a name that is not valid UTF-8" in str(caught.value)


def test_utf8_names_are_accepted(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": "x = 1\n", "données/café.py": "y = 2\n"})
    with within():
        unpacked = codetar.unpack_code(tar, tmp_path / "code")
    assert (unpacked.root / "données" / "café.py").read_text() == "y = 2\n"


# --- links --------------------------------------------------------------------------------------


def _climbing_tar(path: Path, link: str) -> Path:
    """The review's tar: ``link -> d/e/s/../../../victim``, listed first, then ``d/e/s -> ../..``.

    Each target looks inside the tree as text (``d/e/s/../../..`` is the top's parent only once
    ``d/e/s`` is a link), and Python's ``data`` filter passes ``link`` because ``d/e/s`` does
    not exist yet when ``link`` is unpacked. Unpacked in ``W/code.partial``, ``link`` names
    ``W/../../victim``.
    """
    with tarfile.open(path, "w") as archive:
        first = tarfile.TarInfo(link)
        first.type, first.linkname = tarfile.SYMTYPE, "d/e/s/../../../victim"
        archive.addfile(first)
        for directory in ("d", "d/e"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        climber = tarfile.TarInfo("d/e/s")
        climber.type, climber.linkname = tarfile.SYMTYPE, "../.."
        archive.addfile(climber)
        app = FLASK_APP.encode()
        info = tarfile.TarInfo("app.py")
        info.size = len(app)
        archive.addfile(info, io.BytesIO(app))
    return path


def test_mse_run_refuses_a_link_that_climbs_out_through_another_link(
    tmp_path: Path, env: dict[str, str]
) -> None:
    victim = tmp_path / "victim"  # where `a` would point from tmp_path/runs/wd/code.partial
    victim.mkdir(mode=0o700)
    (victim / "secret").write_text("kept\n")
    victim.chmod(0o700)  # whatever the umask
    tar = _climbing_tar(tmp_path / "app.tar", "a")
    workdir = tmp_path / "runs" / "wd"
    line = _mse_run_fails([*run_args(tar, workdir), "--simulation", "--dry-run"], env)
    assert "member 'a' is a link whose target has a '..' component" in line
    assert "(d/e/s/../../../victim)" in line
    # Before the fix, unpacking normalised modes through `a`: the victim became 0755.
    assert victim.stat().st_mode & 0o777 == 0o700
    assert (victim / "secret").read_text() == "kept\n"
    assert not (tmp_path / "runs").exists()


def test_mse_run_never_reads_a_host_file_as_requirements_txt(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The same climb, aimed at a file: check_requirements would read it and quote its lines.
    (tmp_path / "victim").write_text("host-only-package-name==1\n")
    tar = _climbing_tar(tmp_path / "app.tar", "requirements.txt")
    line = _mse_run_fails(
        [*run_args(tar, tmp_path / "runs" / "wd"), "--simulation", "--dry-run"], env
    )
    assert "member 'requirements.txt' is a link whose target has a '..' component" in line
    assert "host-only-package-name" not in line
    assert not (tmp_path / "runs").exists()


def test_a_symlinked_requirements_txt_is_not_followed(tmp_path: Path) -> None:
    # However a link got into the code directory, its target is not read: mse-run would quote
    # a host file's lines in its errors, or pass on what it lists.
    host = tmp_path / "host.txt"
    host.write_text("host-only-package-name==1\n")
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").symlink_to(host)
    with within(), pytest.raises(UsageError) as caught:
        check_requirements(code)
    assert "requirements.txt is a symbolic link, not a regular file" in str(caught.value)
    assert "host-only-package-name" not in str(caught.value)


def test_modes_are_never_set_through_a_link(tmp_path: Path) -> None:
    # Links a filter let through, whatever they name: normalising the unpacked tree sets the
    # modes of its own directories and files, never those of what a link points at.
    outside_dir = tmp_path / "outside-dir"
    outside_dir.mkdir()
    outside_dir.chmod(0o700)
    outside_file = tmp_path / "outside-file"
    outside_file.write_text("x")
    outside_file.chmod(0o600)
    root = tmp_path / "code.partial"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg").chmod(0o700)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "mod.py").chmod(0o600)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    (root / "dir-link").symlink_to(outside_dir)
    (root / "pkg" / "file-link").symlink_to(outside_file)
    codetar._normalise_modes(root)
    assert outside_dir.stat().st_mode & 0o777 == 0o700
    assert outside_file.stat().st_mode & 0o777 == 0o600
    assert (root / "pkg").stat().st_mode & 0o777 == 0o755
    assert (root / "pkg" / "mod.py").stat().st_mode & 0o777 == 0o644
    assert (root / "run.sh").stat().st_mode & 0o777 == 0o755


# --- decompression bombs -----------------------------------------------------------------------


def test_mse_run_stops_at_a_member_declaring_more_than_the_cap(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # 100 GiB declared, 64 MiB of zeros behind it, ~300 kB of gzip: refused from the header,
    # before tarfile would skip (decompress) the data to reach the next member.
    bomb = _gzip(tmp_path / "bomb.tar.gz", _header("big.py", 100 << 30), 64 << 20)
    line = _mse_run_fails(_dry_run(bomb, tmp_path), env)
    assert f"--code {bomb} unpacks to more than 1024 MiB" in line
    assert not (tmp_path / "wd").exists()


def test_a_pax_header_declaring_megabytes_is_not_read_into_memory(tmp_path: Path) -> None:
    bomb = _gzip(
        tmp_path / "pax.tar.gz", _header("././@PaxHeader", 512 << 20, tarfile.XHDTYPE), 64 << 20
    )
    with within(), pytest.raises(UsageError, match="has a header larger than 1 MiB"):
        codetar.inspect_code(bomb)


def test_chained_long_name_headers_are_one_clear_error(tmp_path: Path) -> None:
    # tarfile follows each GNU long-name header by recursion: thousands in a row overflow it.
    link = _header("././@LongLink", 512, tarfile.GNUTYPE_LONGNAME) + b"a" * 511 + b"\0"
    bomb = _gzip(
        tmp_path / "chain.tar.gz",
        _header("app.py", 1) + b"x" + bytes(511),
        link * 5000,
        _header("b.py", 1) + b"x" + bytes(511),
    )
    with within(), pytest.raises(UsageError, match="is damaged or truncated"):
        codetar.inspect_code(bomb)


def test_the_decompressed_stream_is_bounded_whatever_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pax headers hold no file data, so no member size counts them: the stream bound does.
    monkeypatch.setattr(codetar, "MAX_TOTAL_BYTES", 1 << 20)
    monkeypatch.setattr(codetar, "MAX_MEMBERS", 10)
    pax = _header("././@PaxHeader", 900 << 10, tarfile.XHDTYPE) + bytes(900 << 10)
    bomb = _gzip(
        tmp_path / "pax.tar.gz",
        _header("app.py", 1) + b"x" + bytes(511),
        pax,
        pax,
        _header("b.py", 1) + b"x" + bytes(511),
    )
    with (
        within(),
        pytest.raises(UsageError, match="unpacks to more than 1 MiB of files and headers"),
    ):
        codetar.inspect_code(bomb)


def test_mse_run_refuses_a_device_as_code(tmp_path: Path, env: dict[str, str]) -> None:
    line = _mse_run_fails(_dry_run(Path("/dev/zero"), tmp_path), env)
    assert "--code /dev/zero is not a regular file" in line


# --- requirements.txt, the signing key ------------------------------------------------------


def test_mse_run_refuses_a_requirements_txt_over_the_cap(
    tmp_path: Path, env: dict[str, str]
) -> None:
    tar = make_tar(
        tmp_path / "app.tar",
        {"app.py": FLASK_APP, "requirements.txt": "#" * (MAX_REQUIREMENTS_SIZE + 1)},
    )
    line = _mse_run_fails(_dry_run(tar, tmp_path), env)
    assert "the app's requirements.txt is larger than 4 MiB" in line
    assert not (tmp_path / "wd").exists()


def test_a_requirements_txt_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").mkdir()
    with within(), pytest.raises(UsageError, match=r"requirements\.txt is a directory"):
        check_requirements(tmp_path)
    (tmp_path / "requirements.txt").rmdir()
    os.mkfifo(tmp_path / "requirements.txt")
    with within(), pytest.raises(UsageError, match=r"requirements\.txt is a pipe"):
        check_requirements(tmp_path)
    (tmp_path / "requirements.txt").unlink()
    assert check_requirements(tmp_path) == 0  # none at all: nothing to check


def test_mse_run_refuses_a_device_as_signing_key(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})
    line = _mse_run_fails(_dry_run(tar, tmp_path, "--signer-key", "/dev/zero"), env)
    assert "--signer-key /dev/zero is a character device, not a regular file" in line


# --- the simulation state --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["fifo", "huge", "device"])
def test_simulation_state_is_capped_and_regular(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    state = tmp_path / "simulation.json"
    if damage == "fifo":
        os.mkfifo(state)
        reason = "is a pipe, not a regular file"
    elif damage == "huge":
        state.write_bytes(b" " * (bootstrap.MAX_SIMULATION_STATE + 1))
        reason = "is larger than 64 KiB"
    else:
        state = Path("/dev/zero")
        reason = "is a character device"
    monkeypatch.setenv(bootstrap.SIMULATION_ENV, str(state))
    with within(), pytest.raises(UsageError) as caught:
        bootstrap.detect_platform()
    assert f"unreadable simulation state ({reason}" in str(caught.value)


def test_the_simulation_state_replaces_whatever_is_at_its_path(tmp_path: Path) -> None:
    # A FIFO there would block a plain open for writing until a reader came.
    os.mkfifo(tmp_path / pipeline.SIMULATION_STATE)
    identity = SimpleNamespace(
        mrenclave=bytes(32), mrsigner=bytes(32), isv_prod_id=0, isv_svn=0, debug=False
    )
    request = SimpleNamespace(workdir=tmp_path, deployment=make_deployment())
    prepared = SimpleNamespace(request=request, sigstruct=identity)
    with within():
        env = pipeline.simulation_environment(prepared, bytes(16))  # type: ignore[arg-type]
    state = Path(env[bootstrap.SIMULATION_ENV])
    assert state.is_file() and not state.is_fifo()
    assert json.loads(state.read_text())["mrenclave"] == "00" * 32
    assert state.stat().st_mode & 0o777 == 0o600  # it holds the stand-in sealing key


def test_changed_trusted_files_never_opens_a_pipe_or_a_device(tmp_path: Path) -> None:
    # After an early exit mse-run hashes every trusted file again to name the changed one: a
    # named pipe or a link to /dev/zero put where a trusted file was must not make it hang.
    import hashlib

    import tomli_w

    from mse_base._internal.enclave import manifest

    code = tmp_path / "code"
    code.mkdir()
    names = ["app.py", "pipe.py", "zero.py", "changed.py"]
    for name in names:
        (code / name).write_text("x = 1\n")
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    trusted = [{"uri": f"file:code/{name}", "sha256": digest} for name in names]
    path = tmp_path / "mse.manifest"
    path.write_text(tomli_w.dumps({"sgx": {"trusted_files": trusted}}))
    (code / "pipe.py").unlink()
    os.mkfifo(code / "pipe.py")
    (code / "zero.py").unlink()
    (code / "zero.py").symlink_to("/dev/zero")
    (code / "changed.py").write_text("x = 2\n")
    with within():
        changed = manifest.changed_trusted_files(path, tmp_path)
    assert changed == ["code/pipe.py", "code/zero.py", "code/changed.py"]
