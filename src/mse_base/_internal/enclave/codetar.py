"""Unpacking the application's code tar without trusting it.

Python's ``tarfile`` ``data`` filter is the floor: on top of it every member is checked before
anything is written (names that are not UTF-8 or hold control, formatting or line-separator
characters, absolute paths, ``..``, links that could leave the tree, devices, set-id bits,
duplicates, size and count caps), so a rejected tar leaves nothing behind.

Links are judged by a rule that holds whatever other links the tree holds: a symbolic link's
target is relative and has no ``..``, so it names something below the link's own directory, and
a hard link names a regular file listed before it. Checking each target as text against the
names alone is not enough: ``a -> d/e/s/../../../x`` looks inside, but not once ``d/e/s`` is
itself a link to ``../..`` (and the ``data`` filter, judging ``a`` before ``d/e/s`` exists, lets
it through). After unpacking, nothing follows a link either: modes are set on what is there, not
on what a link names.

Reading the tar cannot hang or exhaust memory either: only a regular file is opened, members are
checked one by one as their headers are read (a member declaring too much stops the listing
before its data would be decompressed to skip it), the decompressed stream is cut at the caps
plus header room, and no single read (a pax or long-name header) may exceed 1 MiB.

An encrypted code file (``mse-secrets encrypt-code``) is not unpacked on the host: only its
header is checked, and it is staged as one file, the ciphertext the enclave measures and later
decrypts in its own memory.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mse_base._internal.files import InputRefused, read_limited
from mse_base._internal.provision import codefile
from mse_base.errors import UsageError

MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 1 << 30
# What the (decompressed) tar stream may hold besides file content: per member a header, its
# padding and a long-name or pax header; 8 KiB each is ample for names up to PATH_MAX.
_MEMBER_OVERHEAD = 8 * 1024
#: The largest code tar file read whole: what the caps let an uncompressed tar hold (a compressed
#: one is smaller). Bounds encrypt-code's read of the plain tar and every read of an encrypted one.
MAX_TAR_FILE = MAX_TOTAL_BYTES + MAX_MEMBERS * _MEMBER_OVERHEAD
MAX_ENCRYPTED_FILE = MAX_TAR_FILE + codefile.OVERHEAD
# The largest single read tarfile may make. Member data is copied in 16 KiB chunks and headers
# are 512-byte blocks; only a pax or GNU long-name header is read whole, in one call, and a real
# one holds a path (at most 4 KiB). Without this, a few bytes of gzip could declare a pax header
# of gigabytes and tarfile would try to hold it in memory.
_MAX_READ = 1 << 20


@dataclass(frozen=True)
class UnpackedCode:
    root: Path
    files: int
    total_bytes: int


def _shown(name: str) -> str:
    """A member name for an error line: control characters and undecodable bytes escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _reject(tar_path: Path, member: str, why: str) -> UsageError:
    return UsageError(
        f"--code {tar_path}: member '{_shown(member)}' {why}; rebuild the tar without it"
    )


def _name_defect(name: str) -> str | None:
    """Why ``name`` (as tarfile decoded it, undecodable bytes as surrogates) is refused."""
    if "\0" in name:
        return "has a NUL byte in its name"
    if any("\udc80" <= c <= "\udcff" for c in name):
        # Code names files in UTF-8; other bytes would be named differently by each tool.
        return "has a name that is not valid UTF-8"
    categories = {unicodedata.category(c) for c in name}
    if "Cc" in categories:
        # A newline or escape sequence in a name can forge lines of a listing or a log.
        return "has a control character in its name"
    if "Cf" in categories:
        # Invisible ones that change what is seen: a right-to-left override (U+202E) shows
        # "app\u202eyp.txt" as "apptxt.py"; a zero-width space makes two names look the same.
        return "has an invisible formatting character in its name"
    if categories & {"Zl", "Zp"}:
        # U+2028 and U+2029 end a line for many viewers, as a newline would.
        return "has a line or paragraph separator in its name"
    return None


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


class _Bounded(io.RawIOBase):
    """The decompressed tar stream, refused past ``limit`` bytes or a read over ``_MAX_READ``.

    tarfile reads every header to list the members, so a small compressed file could otherwise
    make it decompress without end (a member declaring a huge size is skipped by seeking) or
    allocate a declared header size at once.
    """

    def __init__(self, inner: io.BufferedIOBase, limit: int, tar_path: Path) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._tar_path = tar_path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def _too_large(self) -> UsageError:
        return UsageError(
            f"--code {self._tar_path} unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB of files "
            "and headers"
        )

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {
            os.SEEK_SET: offset,
            os.SEEK_CUR: self._inner.tell() + offset,
        }.get(whence)
        if target is None:
            raise OSError(errno.ESPIPE, "only absolute and relative seeks are supported")
        if target > self._limit:
            raise self._too_large()
        return self._inner.seek(target)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_READ:
            raise UsageError(
                f"--code {self._tar_path} has a header larger than {_MAX_READ >> 20} MiB; "
                "rebuild the tar"
            )
        if self._inner.tell() + size > self._limit + 1:
            size = self._limit + 1 - self._inner.tell()
        data = self._inner.read(size)
        if self._inner.tell() > self._limit:
            raise self._too_large()
        return data

    def close(self) -> None:
        self._inner.close()
        super().close()


class _Members:
    """The member checks, applied to each member as it is read, before the next one is."""

    def __init__(self, tar_path: Path) -> None:
        self.tar_path = tar_path
        self.seen: set[str] = set()
        # Regular files (and hard links to them) listed so far: what a hard link may name.
        self.regular: set[str] = set()
        self.files = 0
        self.total = 0
        self.count = 0

    def check(self, member: tarfile.TarInfo) -> None:
        tar_path = self.tar_path
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise UsageError(f"--code {tar_path} has more entries than the {MAX_MEMBERS} allowed")
        defect = _name_defect(member.name)
        if defect is not None:
            raise _reject(tar_path, member.name, defect)
        name = _normalise(member.name)
        if name in ("", "."):
            return
        if posixpath.isabs(member.name):
            raise _reject(tar_path, member.name, "has an absolute path")
        if ".." in name.split("/"):
            raise _reject(tar_path, member.name, "has a '..' component")
        if name in self.seen:
            raise _reject(tar_path, member.name, "appears twice (the result would depend on order)")
        self.seen.add(name)
        if member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            raise _reject(tar_path, member.name, "has a setuid, setgid or sticky bit")
        if member.isdev() or member.isfifo():
            raise _reject(tar_path, member.name, "is a device or FIFO")
        if member.issym() or member.islnk():
            self._check_link(member, name)
        if member.isfile() or member.islnk():
            self.regular.add(name)
        if member.isfile():
            self.files += 1
            self.total += member.size
            if self.total > MAX_TOTAL_BYTES:
                raise UsageError(
                    f"--code {tar_path} unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB"
                )
        elif not (member.isdir() or member.issym() or member.islnk()):
            raise _reject(tar_path, member.name, "is not a regular file, directory or link")

    def _check_link(self, member: tarfile.TarInfo, name: str) -> None:
        tar_path = self.tar_path
        target = member.linkname
        defect = _name_defect(target)
        if defect is not None:
            raise _reject(tar_path, member.name, f"is a link whose target {defect[4:]}")
        shown = _shown(target)
        if not target:
            raise _reject(tar_path, member.name, "is a link without a target")
        if posixpath.isabs(target):
            raise _reject(tar_path, member.name, f"is a link to an absolute path ({shown})")
        if ".." in target.split("/"):
            # Even one that stays inside as text: through another link, '..' can climb out (see
            # the module docstring). Without it a target stays below its link's directory, and
            # links to links stay inside too, in any order.
            raise _reject(
                tar_path,
                member.name,
                f"is a link whose target has a '..' component ({shown}); links may only point "
                "into their own directory or below it",
            )
        if member.islnk() and _normalise(target) not in self.regular:
            # A hard link's target is a path from the top of the tree, and tarfile creates it
            # with os.link, which may follow a link in that path: only a file already unpacked
            # is safe to name.
            raise _reject(
                tar_path,
                member.name,
                f"is a hard link to {shown}, which is not a regular file listed before it",
            )


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


def _decompressed(tar_path: Path) -> io.BufferedIOBase:
    """The tar stream of ``tar_path``, decompressed if it is compressed, not yet bounded.

    The compressions are those tarfile's ``r:*`` opens (gzip, bzip2, xz), told by their magic
    numbers.
    """
    # O_NONBLOCK and fstat on the opened file: a FIFO swapped in after _check_path can neither
    # block the open nor be read.
    fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    raw = os.fdopen(fd, "rb")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(
                f"--code {tar_path} is not a regular file; give the path of a tar of your app"
            )
        os.set_blocking(fd, True)
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            return gzip.GzipFile(fileobj=raw, mode="rb")
        if magic.startswith(b"BZh"):
            return bz2.BZ2File(raw)
        if magic.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMAFile(raw)
        return raw
    except BaseException:
        raw.close()
        raise


@contextlib.contextmanager
def _open(tar_path: Path) -> Iterator[tarfile.TarFile]:
    try:
        stream = _decompressed(tar_path)
    except OSError as exc:
        raise UsageError(f"--code {tar_path}: cannot read it ({exc.strerror or exc})") from None
    # Closing a TarFile does not close a file object it was given: this does, with the file.
    with contextlib.closing(stream):
        bounded = _Bounded(stream, MAX_TOTAL_BYTES + MAX_MEMBERS * _MEMBER_OVERHEAD, tar_path)
        try:
            # Names as the bytes say: undecodable ones become surrogates, which _name_defect
            # refuses.
            # Not a with-statement here: only opening errors mean "not a tar".
            archive = tarfile.open(  # noqa: SIM115
                fileobj=bounded,
                mode="r:",
                encoding="utf-8",
                errors="surrogateescape",
            )
        except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, RecursionError):
            # A bad compressed stream (gzip.BadGzipFile, an LZMAError, bz2's OSError), no tar in
            # it, or a first member behind thousands of chained headers (see _read_members):
            # not an archive we can read.
            raise UsageError(f"--code {tar_path}: not a tar or tar.gz archive") from None
        with archive:
            yield archive


def _read_members(
    tar_path: Path, archive: tarfile.TarFile
) -> tuple[list[tarfile.TarInfo], int, int]:
    # Member by member, not getmembers(): each is checked before tarfile skips its data to reach
    # the next header, so a member declaring a huge size stops the listing instead of making it
    # decompress that much.
    checks = _Members(tar_path)
    members: list[tarfile.TarInfo] = []
    try:
        while (member := archive.next()) is not None:
            checks.check(member)
            members.append(member)
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, RecursionError) as exc:
        # RecursionError: tarfile follows chained long-name and pax headers by recursion, so a
        # tar of thousands of them in a row exhausts the stack, not the memory.
        raise UsageError(
            f"--code {tar_path} is damaged or truncated ({_first_line(exc)}); rebuild the tar"
        ) from None
    if checks.files == 0:
        # Refused here, before any directory exists: an empty app would only fail later, less
        # clearly (the manifest would trust no application file).
        raise UsageError(
            f"--code {tar_path} contains no files; pack your app's directory: "
            "tar -C DIR -cf app.tar ."
        )
    return members, checks.files, checks.total


def inspect_code(tar_path: Path) -> None:
    """Check every member of the tar without writing anything (run before any directory exists)."""
    _check_path(tar_path)
    if codefile.is_encrypted(tar_path):
        read_encrypted(tar_path)
        return
    with _open(tar_path) as archive:
        _read_members(tar_path, archive)


def read_encrypted(path: Path, what: str = "--code") -> bytes:
    """An encrypted code file's bytes, bounded while read, its header checked."""
    try:
        data = read_limited(path, MAX_ENCRYPTED_FILE)
    except InputRefused as exc:
        raise UsageError(f"{what} {path} {exc}") from None
    codefile.check_header(data, f"{what} {path}")
    return data


def _stage_encrypted(path: Path, destination: Path) -> UnpackedCode:
    data = read_encrypted(path)
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


def unpack_code(tar_path: Path, destination: Path, *, in_place: bool = False) -> UnpackedCode:
    """Unpack ``tar_path`` (plain or compressed) into ``destination``, which must not exist.

    An encrypted code file is staged as it is (see the module docstring). ``in_place`` is for the
    enclave's memory (decrypted code in Gramine's tmpfs, which cannot rename a directory or change
    modes): straight into ``destination``, modes as extracted, removed again on failure; nothing
    is measured from it, so uniform modes do not matter there.
    """
    _check_path(tar_path)
    if codefile.is_encrypted(tar_path):
        return _stage_encrypted(tar_path, destination)
    with _open(tar_path) as archive:
        members, files, total = _read_members(tar_path, archive)
        staging = destination if in_place else destination.with_name(destination.name + ".partial")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o755, parents=True)
            try:
                _extract(archive, members, staging)
                if not in_place:
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
    # Links are skipped, never followed: chmod on a link changes what it names, which is
    # where a hostile tar would aim one (Linux has no lchmod). os.walk does not descend into
    # them either; a directory it cannot list is an error, not silently left as it was.
    root.chmod(0o755)

    def unreadable(error: OSError) -> None:
        raise error

    for directory, dirnames, filenames in os.walk(root, onerror=unreadable):
        # Top-down: each subdirectory is made 0755 (so listable) before the walk enters it.
        for name in [*dirnames, *filenames]:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                path.chmod(0o755)
            elif stat.S_ISREG(mode):
                path.chmod(0o755 if mode & 0o111 else 0o644)
