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
import select
import stat
import time
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_MODE = 0o600
# Bytes asked of the kernel per read: a bounded read never allocates much beyond its limit.
_CHUNK = 1 << 16
# A pipe is read only while its writer keeps writing: a writer silent this long (or one that
# never came to a named pipe) ends the read, as does a pipe still open after the whole
# deadline, so a stalled `<(cmd)` or an idle stdin cannot keep a command waiting forever. A
# command producing a quote or certificate writes it in well under either.
PIPE_IDLE_SECONDS = 10
PIPE_DEADLINE_SECONDS = 60


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
    (a user's ``<(...)`` or named pipe: it is read to its end, with the same bound, while its
    writer keeps writing; see :data:`PIPE_IDLE_SECONDS`). Devices are refused from their
    ``stat``, without being opened (opening some has effects: a tape rewinds, a watchdog arms).
    ``private`` also refuses a file others can read or write (a secret must be 0600);
    ``nofollow`` a symlink. The kind is checked again on the opened descriptor, so the file
    checked is the file read even if the path was swapped in between.
    """
    try:
        found = os.stat(path, dir_fd=dir_fd, follow_symlinks=not nofollow).st_mode
    except FileNotFoundError:
        raise InputRefused("does not exist", missing=True) from None
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISLNK(found):
        raise InputRefused("is a symbolic link, not a regular file")
    _refuse_kind(found, pipes=pipes)
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
        return _read_bounded(fd, limit, stream=_is_stream(mode))
    finally:
        os.close(fd)


def open_regular(path: Path | str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (after links); InputRefused if not.

    For a file read to its end with no bound (hashed, say): the kind is checked from ``stat``
    before opening, so a named pipe, a device, or a link to one (``/dev/zero``) is never opened
    and cannot make the reader wait or read for ever; and again on the opened descriptor, so
    the file checked is the file read.
    """
    try:
        _refuse_kind(Path(path).stat().st_mode, pipes=False)
        # O_NONBLOCK: a named pipe swapped in after the stat must not make open() wait.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputRefused("does not exist", missing=True) from None
    except InputRefused:
        raise
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    try:
        _checked_mode(fd, pipes=False)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_descriptor(fd: int, limit: int, *, pipes: bool = False) -> bytes:
    """What :func:`read_limited` reads, from a descriptor it does not own (0: standard input).

    ``pipes`` accepts a pipe or socket besides a regular file; a terminal or other device is
    refused, as a command reading one would wait for typing, or read without end.
    """
    mode = _checked_mode(fd, pipes=pipes)
    return _read_bounded(fd, limit, stream=_is_stream(mode))


def _is_stream(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _refuse_kind(mode: int, *, pipes: bool, fd: int | None = None) -> None:
    if not (stat.S_ISREG(mode) or (pipes and _is_stream(mode))):
        kind = "a terminal" if fd is not None and os.isatty(fd) else _kind(mode)
        wanted = "a regular file or a pipe" if pipes else "a regular file"
        raise InputRefused(f"is {kind}, not {wanted}")


def _checked_mode(fd: int, *, pipes: bool) -> int:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    _refuse_kind(mode, pipes=pipes, fd=fd)
    return mode


def _read_bounded(fd: int, limit: int, *, stream: bool) -> bytes:
    chunks: list[bytes] = []
    total = 0
    wait = _PipeWait(fd) if stream else None
    try:
        if wait is None:
            # A regular file was opened non-blocking only so that open() could not wait on a
            # FIFO swapped in; reads of it never wait anyway.
            os.set_blocking(fd, True)
        while total <= limit:
            if wait is not None and not wait.readable():
                continue
            try:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            except BlockingIOError:
                continue  # a named pipe (non-blocking): woken, but its data went elsewhere
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except InputRefused:
        raise
    except OSError as err:
        raise InputRefused(f"cannot be read ({err.strerror or err})") from None
    if total > limit:
        raise InputRefused(f"is larger than {size_text(limit)}")
    if stream and total == 0:
        # Nothing at all is no input (a writer that failed, or a named pipe closed before a
        # write): saying so is clearer than whatever parsing zero bytes would say.
        raise InputRefused("is empty (a pipe nothing was written to)")
    return b"".join(chunks)


class _PipeWait:
    """Waiting for a pipe's writer, within :data:`PIPE_IDLE_SECONDS` and the whole deadline.

    ``poll`` rather than blocking reads, which would wait on a silent writer for ever. It works
    whether the descriptor is blocking (standard input, shared with the parent shell, whose mode
    is left alone) or not: a read is only made once poll reports data or the writer's end, so it
    does not wait (unless another process reads the same pipe at the same moment, which no
    shell pipeline does).
    """

    def __init__(self, fd: int) -> None:
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._end = time.monotonic() + PIPE_DEADLINE_SECONDS

    def readable(self) -> bool:
        """True once a read will not block; raises when the writer stayed silent too long."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise InputRefused(f"is a pipe still being written after {PIPE_DEADLINE_SECONDS} s")
        timeout = min(PIPE_IDLE_SECONDS, left)
        if not self._poller.poll(timeout * 1000):
            if timeout < PIPE_IDLE_SECONDS:
                return False  # the whole deadline is up: said on the next call
            raise InputRefused(f"is a pipe nothing was written to for {PIPE_IDLE_SECONDS} s")
        return True


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
