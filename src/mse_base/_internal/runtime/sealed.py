"""What an enclave seals for its own restart (``mse-run --provision sealed``).

When its owner sends ``sealed_secrets`` (push or pull), the enclave writes one file to
``/mse/secrets``: those secrets, the code key and the TLS key it was given, in the pull answer's
JSON form (:func:`mse_base._internal.provision.protocol.parse_release` reads it back, with the
same checks). Gramine encrypts that mount with the ``_sgx_mrenclave`` key, which the CPU derives
from MRENCLAVE: only the same enclave, on the same CPU, can read it back, so a restart needs no
owner and no network, and a changed enclave cannot read it at all.

Without SGX the stand-in key mse-run derives from MRENCLAVE plays the CPU's part: under
``--direct`` Gramine itself encrypts with it; in simulation, where no Gramine encrypts anything,
this module seals the file with AES-GCM under it, so the sealed state is never in the clear on
the host in any mode.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mse_base._internal.enclave.manifest import SEALED_STATE_NAME
from mse_base._internal.files import InputRefused, read_limited, write_private
from mse_base._internal.provision.protocol import MAX_BODY, Payload, Refused, parse_release
from mse_base.errors import Error

# The simulation's own envelope (Gramine's encrypted files have theirs): a magic and version that
# are also the associated data, a 12-byte nonce, then AES-GCM's ciphertext and tag.
_MAGIC = b"MSESEAL\x00\x01"
_NONCE = 12
# What load() reads; save() refuses more, so nothing sealed is ever unreadable for its size.
# Twice the body: re-encoding is raw UTF-8, but numbers may grow ("1e5" is read back 100000.0).
_MAX_FILE = 2 * MAX_BODY


class Unsealable(Error):
    """The sealed state is there but this enclave cannot read it."""


class SealedState:
    """The one sealed file in ``directory``; ``key`` only in simulation (else Gramine seals)."""

    def __init__(self, directory: Path, key: bytes | None = None) -> None:
        self.path = directory / SEALED_STATE_NAME
        self._key = key

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def seal(self, payload: Payload) -> bytes:
        """What :meth:`write` stores for ``payload``; :class:`Refused` (413) if :meth:`load`
        could not read it back, so it is refused before anything is installed."""
        kept = Payload(
            uuid="",
            sealed_secrets=payload.sealed_secrets or {},
            code_key=payload.code_key,
            tls_key=payload.tls_key,
        )
        data = kept.encode_release()
        if self._key is not None:
            nonce = secrets.token_bytes(_NONCE)
            data = _MAGIC + nonce + AESGCM(self._key).encrypt(nonce, data, _MAGIC)
        if len(data) > _MAX_FILE:
            raise Refused(413, f"what is to be sealed is over {_MAX_FILE} bytes once encoded")
        return data

    def write(self, sealed: bytes) -> None:
        try:
            write_private(self.path, sealed)
        except OSError as err:
            raise Error(
                f"cannot seal the provisioned state to {self.path}: {err.strerror or err}"
            ) from None

    def load(self) -> Payload:
        try:
            data = read_limited(self.path, _MAX_FILE, nofollow=True)
        except InputRefused as err:
            # Gramine answers a file sealed under another key with EACCES on open.
            raise self._unsealable(str(err)) from None
        if self._key is not None:
            start = len(_MAGIC) + _NONCE
            head, nonce, sealed = data[: len(_MAGIC)], data[len(_MAGIC) : start], data[start:]
            if head != _MAGIC or len(nonce) != _NONCE:
                raise self._unsealable("not a sealed state file")
            try:
                data = AESGCM(self._key).decrypt(nonce, sealed, _MAGIC)
            except InvalidTag:
                raise self._unsealable("sealed under another key, or altered") from None
        try:
            payload = parse_release(data)
        except Refused as refused:
            raise self._unsealable(str(refused)) from None
        if payload.sealed_secrets is None:
            raise self._unsealable("no sealed secrets in it")
        return payload

    def _unsealable(self, why: str) -> Unsealable:
        return Unsealable(
            f"cannot unseal {self.path} ({why}): only the enclave that sealed it can, on the "
            "same machine: start it with exactly that run's options (the same MRENCLAVE); the "
            "app was not started. Only if that fails, provision it again with --provision push "
            "or pull (which sets this state aside)"
        )
