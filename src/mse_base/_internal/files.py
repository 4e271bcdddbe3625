"""How the toolkit reads and writes files: bounded reads, secrets private from the first byte.

Shared by every part (the signing key on the host, the TLS key inside the enclave, the simulation
PKI's keys, every input a command reads), so there is one rule for how a secret reaches a disk and
one for how much of a file, and what kind of file, a command will read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_MODE = 0o600
# Bytes asked of the kernel per read: a bounded read never allocates much beyond its limit.
_CHUNK = 1 << 16


class InputRefused(OSError):
    """A file was not read: missing, unreadable, of the wrong kind, too large or not private.

    ``str()`` is the reason as a predicate ("is larger than 64 KiB", "does not exist"), written
    to follow ``"<what> <path> "`` on one error line. An ``OSError``, so code that already treats
    an unreadable file as absent keeps doing so.
    """

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        #: The path does not exist (callers often say what should be there instead).
        self.missing = missing


def size_text(size: int) -> str:
    """``65536`` as ``64 KiB``: caps are powers of two, and error lines should read as such."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "an unusual file")


def read_limited(
    path: Path | str,
    limit: int,
    *,
    pipes: bool = False,
    private: bool = False,
    nofollow: bool = False,
    dir_fd: int | None = None,
) -> bytes:
    """The content of ``path``, refused (:class:`InputRefused`) beyond ``limit`` bytes.

    The limit is enforced while reading (at most ``limit + 1`` bytes are ever read), not by a
    size checked beforehand, so a file that grows, or a device such as ``/dev/zero``, cannot
    make a command run on or fill its memory. Only a regular file is read, unless ``pipes``
    (a user's ``<(...)`` or named pipe: it is read to its end, with the same bound). Devices are
    never read: ``/dev/urandom`` is refused at once rather than consumed. ``private`` also
    refuses a file others can read or write (a secret must be 0600); ``nofollow`` a symlink.
    Check and read go through one descriptor, so the file checked is the file read.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    # O_NONBLOCK: opening a named pipe must not wait for a writer that may never come.
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputRefused("does not exist", missing=True) from None
    except OSError as err:
        if nofollow and err.errno == errno.ELOOP:
            raise InputRefused("is a symbolic link, not a regular file") from None
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    try:
        mode = _checked_mode(fd, pipes=pipes)
        if private and mode & 0o077:
            raise InputRefused(
                f"is readable or writable by other users (mode {stat.S_IMODE(mode):04o}); a "
                "secret file must be 0600"
            )
        return _read_bounded(fd, limit)
    finally:
        os.close(fd)


def read_descriptor(fd: int, limit: int, *, pipes: bool = False) -> bytes:
    """What :func:`read_limited` reads, from a descriptor it does not own (0: standard input).

    ``pipes`` accepts a pipe or socket besides a regular file; a terminal or other device is
    refused, as a command reading one would wait for typing, or read without end.
    """
    _checked_mode(fd, pipes=pipes)
    return _read_bounded(fd, limit)


def _checked_mode(fd: int, *, pipes: bool) -> int:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    streams = pipes and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))
    if not (stat.S_ISREG(mode) or streams):
        kind = "a terminal" if os.isatty(fd) else _kind(mode)
        wanted = "a regular file or a pipe" if pipes else "a regular file"
        raise InputRefused(f"is {kind}, not {wanted}")
    return mode


def _read_bounded(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        # A pipe was opened non-blocking only so that open() could not wait; reads may.
        os.set_blocking(fd, True)
        while total <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    if total > limit:
        raise InputRefused(f"is larger than {size_text(limit)}")
    return b"".join(chunks)


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM, the form Gramine, OpenSSL and granian all read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, mode 0600 from the start, never through a symlink."""
    write_atomic(path, data, PRIVATE_MODE)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or all of the new one.

    The temporary file is created with its final mode by ``os.open``, so a secret is never
    readable by others, not even for an instant; ``replace`` swaps a symlink at ``path`` for a
    file rather than writing through it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
