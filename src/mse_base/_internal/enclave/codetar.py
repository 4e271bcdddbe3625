"""Unpacking the application's code tar without trusting it.

Python's ``tarfile`` ``data`` filter is the floor: on top of it every member is checked before
anything is written (absolute paths, ``..``, links leaving the tree, devices, set-id bits,
duplicates, size and count caps), so a rejected tar leaves nothing behind.

An encrypted code file (``mse-secrets encrypt-code``) is not unpacked on the host: only its
header is checked, and it is staged as one file, the ciphertext the enclave measures and later
decrypts in its own memory.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from mse_base._internal.provision import codefile
from mse_base.errors import UsageError

MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 1 << 30


@dataclass(frozen=True)
class UnpackedCode:
    root: Path
    files: int
    total_bytes: int


def _reject(tar_path: Path, member: str, why: str) -> UsageError:
    return UsageError(f"--code {tar_path}: member {member!r} {why}; rebuild the tar without it")


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _check_members(tar_path: Path, members: list[tarfile.TarInfo]) -> tuple[int, int]:
    if len(members) > MAX_MEMBERS:
        raise UsageError(
            f"--code {tar_path} has {len(members)} entries, more than the {MAX_MEMBERS} allowed"
        )
    seen: set[str] = set()
    total = 0
    files = 0
    for member in members:
        name = _normalise(member.name)
        if name in ("", "."):
            continue
        if "\0" in name:
            raise _reject(tar_path, member.name, "has a NUL byte in its name")
        if posixpath.isabs(member.name):
            raise _reject(tar_path, member.name, "has an absolute path")
        if ".." in name.split("/"):
            raise _reject(tar_path, member.name, "has a '..' component")
        if name in seen:
            raise _reject(tar_path, member.name, "appears twice (the result would depend on order)")
        seen.add(name)
        if member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            raise _reject(tar_path, member.name, "has a setuid, setgid or sticky bit")
        if member.isdev() or member.isfifo():
            raise _reject(tar_path, member.name, "is a device or FIFO")
        if member.issym() or member.islnk():
            target = member.linkname
            if posixpath.isabs(target):
                raise _reject(tar_path, member.name, f"is a link to an absolute path ({target})")
            base = posixpath.dirname(name) if member.issym() else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if resolved == ".." or resolved.startswith("../"):
                raise _reject(tar_path, member.name, f"is a link pointing outside ({target})")
        elif member.isfile():
            files += 1
            total += member.size
            if total > MAX_TOTAL_BYTES:
                raise UsageError(
                    f"--code {tar_path} unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB"
                )
        elif not member.isdir():
            raise _reject(tar_path, member.name, "is not a regular file, directory or link")
    return files, total


def _check_path(tar_path: Path) -> None:
    if tar_path.is_dir():
        raise UsageError(
            f"--code {tar_path} is a directory; pack it first: tar -C {tar_path} -cf app.tar ."
        )
    if tar_path.exists() and not tar_path.is_file():
        raise UsageError(
            f"--code {tar_path} is not a regular file; give the path of a tar of your app"
        )
    if not tar_path.is_file():
        raise UsageError(f"--code {tar_path}: no such file; give the path of a tar of your app")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, EOFError):
        # tarfile's message lists every decompressor it tried, over several lines.
        raise UsageError(f"--code {tar_path}: not a tar or tar.gz archive") from None
    except OSError as exc:
        raise UsageError(f"--code {tar_path}: cannot read it ({exc.strerror or exc})") from None


def _read_members(
    tar_path: Path, archive: tarfile.TarFile
) -> tuple[list[tarfile.TarInfo], int, int]:
    try:
        members = archive.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UsageError(
            f"--code {tar_path} is damaged or truncated ({_first_line(exc)}); rebuild the tar"
        ) from None
    files, total = _check_members(tar_path, members)
    if files == 0:
        # Refused here, before any directory exists: an empty app would only fail later, less
        # clearly (the manifest would trust no application file).
        raise UsageError(
            f"--code {tar_path} contains no files; pack your app's directory: "
            "tar -C DIR -cf app.tar ."
        )
    return members, files, total


def inspect_code(tar_path: Path) -> None:
    """Check every member of the tar without writing anything (run before any directory exists)."""
    _check_path(tar_path)
    if codefile.is_encrypted(tar_path):
        _read_encrypted(tar_path)
        return
    with _open(tar_path) as archive:
        _read_members(tar_path, archive)


def _read_encrypted(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--code {path}: cannot read it ({exc.strerror or exc})") from None
    codefile.check_header(data, f"--code {path}")
    return data


def _stage_encrypted(path: Path, destination: Path) -> UnpackedCode:
    data = _read_encrypted(path)
    staging = destination.with_name(destination.name + ".partial")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755, parents=True)
        target = staging / codefile.ENCRYPTED_NAME
        target.write_bytes(data)
        target.chmod(0o644)  # ciphertext: public like the code it hides, and measured
        staging.rename(destination)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(
            f"--code {path}: cannot copy it into {destination.parent} ({exc.strerror or exc})"
        ) from None
    return UnpackedCode(destination, 1, len(data))


def unpack_code(tar_path: Path, destination: Path) -> UnpackedCode:
    """Unpack ``tar_path`` (plain or compressed) into ``destination``, which must not exist.

    An encrypted code file is staged as it is (see the module docstring).
    """
    _check_path(tar_path)
    if codefile.is_encrypted(tar_path):
        return _stage_encrypted(tar_path, destination)
    with _open(tar_path) as archive:
        members, files, total = _read_members(tar_path, archive)
        staging = destination.with_name(destination.name + ".partial")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o755, parents=True)
            try:
                _extract(archive, members, staging)
                _normalise_modes(staging)
                staging.rename(destination)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except (tarfile.TarError, EOFError) as exc:
            # A member's data cut short, or (on Pythons with filters) one the data filter refused.
            raise UsageError(
                f"--code {tar_path}: cannot unpack it ({_first_line(exc)}); rebuild the tar"
            ) from None
        except OSError as exc:
            raise UsageError(
                f"--code {tar_path}: cannot unpack it into {destination.parent} "
                f"({exc.strerror or _first_line(exc)})"
            ) from None
    return UnpackedCode(destination, files, total)


def _extract(archive: tarfile.TarFile, members: list[tarfile.TarInfo], staging: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        archive.extractall(staging, members=members, filter="data")
        return
    # Pythons without extraction filters (before 3.11.4/3.12, e.g. Debian 12's 3.11.2): every
    # member already passed _check_members, which refuses all the data filter would; what is
    # left is ownership and modes, which must not come from the tar either.
    uid, gid = os.getuid(), os.getgid()
    for member in members:
        member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
        member.mode &= 0o755
    archive.extractall(staging, members=members)  # noqa: S202 - members checked above


def _normalise_modes(root: Path) -> None:
    # Only content is measured, but uniform modes keep the tree identical whatever umask or
    # archiver produced the tar. The code is public (it is measured), so 0755/0644 hide nothing.
    for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            executable = path.stat().st_mode & 0o111
            path.chmod(0o755 if executable else 0o644)
