"""The enclave signing key: Gramine's default location, and the RSA-3072/e=3 rule SGX imposes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mse_base._internal.files import InputRefused, private_key_pem, read_limited, write_private
from mse_base.errors import UsageError

# An RSA-3072 PEM key is about 2.5 kB; a file of 64 KiB is not an enclave signing key.
MAX_KEY_FILE = 64 * 1024


def default_key_path() -> Path:
    # Same rule as gramine-sgx-sign (graminelibos/sgx_sign.py, SGX_RSA_KEY_PATH).
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "gramine" / "enclave-key.pem"


@dataclass(frozen=True)
class SignerKey:
    key: rsa.RSAPrivateKey
    path: Path
    throwaway: bool


def load_signer_key(path: Path) -> SignerKey:
    try:
        data = read_limited(path, MAX_KEY_FILE)
    except InputRefused as exc:
        raise UsageError(
            f"--signer-key {path} {exc}; mount your enclave key there "
            "or create one with `gramine-sgx-gen-private-key`"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(
            f"--signer-key {path} is not an unencrypted PEM private key; "
            "export it without a passphrase"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(f"--signer-key {path} is not an RSA key; SGX needs RSA-3072 with e=3")
    if key.key_size != 3072 or key.public_key().public_numbers().e != 3:
        raise UsageError(
            f"--signer-key {path} is RSA-{key.key_size} with exponent "
            f"{key.public_key().public_numbers().e}; SGX needs RSA-3072 with exponent 3 "
            "(`gramine-sgx-gen-private-key` makes one)"
        )
    return SignerKey(key, path, throwaway=False)


#: File name of the key made for runs without one (a forced rerun removes it with the rest).
THROWAWAY_KEY_NAME = "throwaway-enclave-key.pem"


def throwaway_signer_key(directory: Path) -> SignerKey:
    """A fresh key for dry runs without a key: MRSIGNER is then meaningless, MRENCLAVE is not."""
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = directory / THROWAWAY_KEY_NAME
    write_private(path, private_key_pem(key))
    return SignerKey(key, path, throwaway=True)
