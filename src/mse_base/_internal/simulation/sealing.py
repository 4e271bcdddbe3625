"""The stand-in for SGX's MRENCLAVE sealing key, under ``--direct`` and in simulation.

On SGX the CPU derives ``_sgx_mrenclave`` from its own secret and the enclave's MRENCLAVE: the
same enclave on the same CPU gets the same key after any restart, a changed enclave another one.
Without SGX, mse-run keeps a random root key in the work directory (0600, created on first use,
kept by ``--force``) and derives the stand-in from it and MRENCLAVE with HKDF, so the behaviour
users rely on holds (a restart unseals, a changed enclave cannot), while anyone who can read the
work directory can read the root key: which is what "no hardware isolation" means.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mse_base._internal.files import InputRefused, read_limited, write_private
from mse_base.errors import UsageError

_ROOT_SIZE = 32
# Gramine's SGX sealing keys are 128-bit (an EGETKEY result); the stand-in has the same size.
KEY_SIZE = 16


def stand_in_sealing_key(path: Path, mrenclave: bytes) -> bytes:
    """The sealing key this MRENCLAVE gets from the root key at ``path``, made if missing."""
    try:
        root = read_limited(path, _ROOT_SIZE + 1, nofollow=True, private=True)
    except InputRefused as err:
        if not err.missing:
            raise UsageError(
                f"{path} {err}: chmod 600 it, or remove it (what it sealed is then lost)"
            ) from None
        root = secrets.token_bytes(_ROOT_SIZE)
        write_private(path, root)
    if len(root) != _ROOT_SIZE:
        raise UsageError(
            f"{path} is not a {_ROOT_SIZE}-byte key: remove it (what it sealed is then lost)"
        )
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=None,
        info=b"mse-base stand-in _sgx_mrenclave\x00" + mrenclave,
    ).derive(root)
