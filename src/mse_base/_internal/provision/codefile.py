"""The encrypted code format: a code tar sealed with AES-256-GCM for an enclave's eyes only.

Layout (version 1), all of it measured as one trusted file::

    offset  size  content
    0       8     magic b"MSECODE\\x00"
    8       1     version, 1
    9       12    nonce (random)
    21      ...   AES-256-GCM ciphertext of the tar, then its 16-byte tag

The first 21 bytes are the associated data, so the header cannot be changed without failing the
tag. The key is 32 random bytes, kept in a file as 64 hex digits and a newline, mode 0600; it
reaches the enclave only in a push (``code_key``), over the connection whose certificate the owner
verified. A new nonce on every encryption, and a key is meant for one tar: re-encrypting makes a
new key too (``mse-secrets encrypt-code`` always does).

May import ``mse_base.errors`` and the shared ``files`` only: the enclave's runtime and the host's
pipeline use this module.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mse_base._internal.files import InputRefused, read_limited, write_private
from mse_base.errors import Error, UsageError

MAGIC = b"MSECODE\x00"
VERSION = 1
_NONCE = 12
HEADER_SIZE = len(MAGIC) + 1 + _NONCE
_TAG = 16
#: Bytes an encrypted file has beyond its plaintext.
OVERHEAD = HEADER_SIZE + _TAG
KEY_SIZE = 32
_MAX_KEY_FILE = 4096
# What the host stages in the code directory instead of the unpacked tree.
ENCRYPTED_NAME = "code.tar.enc"
# AESGCM refuses more in one call; a code tar that large would not fit an enclave anyway.
MAX_PLAINTEXT = (1 << 31) - 1


class WrongKey(Error):
    """The key does not decrypt this file (another key, or the file was altered)."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    if len(plaintext) > MAX_PLAINTEXT:
        raise UsageError("the code tar is over 2 GiB, more than AES-GCM encrypts in one piece")
    nonce = os.urandom(_NONCE)
    header = MAGIC + bytes([VERSION]) + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def has_magic(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def is_encrypted(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts like an encrypted code file (no key needed).

    Anything else (missing, unreadable, a pipe or device, a plain tar) is False: the tar checks
    then report it. Opened without blocking, so a named pipe cannot stall the caller.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return has_magic(os.read(fd, len(MAGIC)))
    except OSError:
        return False
    finally:
        os.close(fd)


def check_header(data: bytes, where: str) -> None:
    if not has_magic(data):
        raise UsageError(f"{where}: not an mse encrypted code file (no MSECODE header)")
    if len(data) < OVERHEAD:
        raise UsageError(f"{where}: truncated encrypted code file")
    if data[len(MAGIC)] != VERSION:
        raise UsageError(
            f"{where}: encrypted code format version {data[len(MAGIC)]}, this mse-base reads "
            f"version {VERSION}; encrypt it again with this version's mse-secrets"
        )


def decrypt(data: bytes, key: bytes, where: str) -> bytes:
    check_header(data, where)
    header, nonce = data[:HEADER_SIZE], data[len(MAGIC) + 1 : HEADER_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, data[HEADER_SIZE:], header)
    except InvalidTag:
        raise WrongKey(
            f"{where}: the code key does not decrypt it (another key, or the file was altered)"
        ) from None


def write_key(path: Path, key: bytes) -> None:
    write_private(path, key.hex().encode("ascii") + b"\n")


def read_key(path: Path, what: str) -> bytes:
    try:
        text = read_limited(path, _MAX_KEY_FILE).decode("ascii").strip()
    except InputRefused as err:
        raise UsageError(f"{what} {path} {err}") from None
    except UnicodeError:
        text = ""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        # Never echo the content: it is (or was meant to be) a key.
        raise UsageError(
            f"{what} {path}: not a code key (64 hex digits, as mse-secrets encrypt-code writes)"
        )
    return key
