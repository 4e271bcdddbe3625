"""SGX SIGSTRUCT: the signed enclave identity that ``gramine-sgx-sign`` writes to ``*.sig``.

Layout from the Intel SDM, Vol. 3D, "Enclave Signature Structure (SIGSTRUCT)": integers are
little-endian, the RSA modulus, signature, Q1 and Q2 too. The signature covers bytes 0..127 and
900..1027. MRSIGNER is SHA-256 of the modulus as stored.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mse_base.errors import Error

SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
_VENDOR = 16
_DATE = 20
_HEADER2 = 24
_MODULUS = 128
_EXPONENT = 512
_SIGNATURE = 516
_MISC_SELECT = 900
_MISC_MASK = 904
_ATTRIBUTES = 928
_ATTRIBUTE_MASK = 944
_ENCLAVE_HASH = 960
_ISV_PROD_ID = 1024
_ISV_SVN = 1026
_Q1 = 1040
_Q2 = 1424
_KEY_BYTES = 384

# SGX attribute flag bits (SDM "Attributes Structure").
FLAG_INIT = 1 << 0
FLAG_DEBUG = 1 << 1
FLAG_MODE64BIT = 1 << 2


class SigstructError(Error):
    """The SIGSTRUCT file is malformed or its signature does not verify."""


@dataclass(frozen=True)
class Sigstruct:
    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attributes_flags: int
    attributes_xfrm: int
    misc_select: int
    date: str

    @property
    def debug(self) -> bool:
        return bool(self.attributes_flags & FLAG_DEBUG)


def _signed_bytes(data: bytes) -> bytes:
    return data[:128] + data[_MISC_SELECT : _MISC_SELECT + 128]


def parse_sigstruct(data: bytes) -> Sigstruct:
    """Parse a SIGSTRUCT and check its RSA-3072 signature against its own modulus."""
    if len(data) != SIZE:
        raise SigstructError(f"SIGSTRUCT must be {SIZE} bytes, got {len(data)}")
    if data[:16] != HEADER or data[_HEADER2 : _HEADER2 + 16] != HEADER2:
        raise SigstructError("SIGSTRUCT header is not the architectural constant")
    modulus_le = data[_MODULUS : _MODULUS + _KEY_BYTES]
    (exponent,) = struct.unpack_from("<I", data, _EXPONENT)
    if exponent != 3:
        raise SigstructError(f"SIGSTRUCT exponent is {exponent}; SGX requires 3")
    modulus = int.from_bytes(modulus_le, "little")
    signature = int.from_bytes(data[_SIGNATURE : _SIGNATURE + _KEY_BYTES], "little")
    public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    try:
        public.verify(
            signature.to_bytes(_KEY_BYTES, "big"),
            _signed_bytes(data),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        raise SigstructError("SIGSTRUCT signature does not verify with its modulus") from None
    # Q1/Q2 let the CPU check the signature without division; a wrong pair fails EINIT.
    q1 = int.from_bytes(data[_Q1 : _Q1 + _KEY_BYTES], "little")
    q2 = int.from_bytes(data[_Q2 : _Q2 + _KEY_BYTES], "little")
    if (q1, q2) != _q1_q2(signature, modulus):
        raise SigstructError("SIGSTRUCT Q1/Q2 do not match its signature")
    flags, xfrm = struct.unpack_from("<QQ", data, _ATTRIBUTES)
    (misc_select,) = struct.unpack_from("<I", data, _MISC_SELECT)
    (isv_prod_id, isv_svn) = struct.unpack_from("<HH", data, _ISV_PROD_ID)
    (date,) = struct.unpack_from("<I", data, _DATE)
    return Sigstruct(
        mrenclave=data[_ENCLAVE_HASH : _ENCLAVE_HASH + 32],
        mrsigner=hashlib.sha256(modulus_le).digest(),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        attributes_flags=flags,
        attributes_xfrm=xfrm,
        misc_select=misc_select,
        date=f"{date:08x}",
    )


def _q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    q1 = signature**2 // modulus
    q2 = (signature**3 - q1 * signature * modulus) // modulus
    return q1, q2


def build_sigstruct(
    *,
    key: rsa.RSAPrivateKey,
    mrenclave: bytes,
    isv_prod_id: int,
    isv_svn: int,
    debug: bool,
    date: int = 0,
) -> bytes:
    """Build and sign a SIGSTRUCT; the simulation uses it so both modes read identities alike."""
    numbers = key.public_key().public_numbers()
    if numbers.e != 3 or key.key_size != 3072:
        raise SigstructError("SGX signing keys must be RSA-3072 with exponent 3")
    buf = bytearray(SIZE)
    buf[:16] = HEADER
    struct.pack_into("<I", buf, _VENDOR, 0)
    struct.pack_into("<I", buf, _DATE, date)
    buf[_HEADER2 : _HEADER2 + 16] = HEADER2
    buf[_MODULUS : _MODULUS + _KEY_BYTES] = numbers.n.to_bytes(_KEY_BYTES, "little")
    struct.pack_into("<I", buf, _EXPONENT, 3)
    struct.pack_into("<II", buf, _MISC_SELECT, 0, 0xFFFFFFFF)
    flags = FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if debug else 0)
    struct.pack_into("<QQ", buf, _ATTRIBUTES, flags, 0x3)
    struct.pack_into("<QQ", buf, _ATTRIBUTE_MASK, 0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFF9FF1B)
    if len(mrenclave) != 32:
        raise SigstructError("MRENCLAVE must be 32 bytes")
    buf[_ENCLAVE_HASH : _ENCLAVE_HASH + 32] = mrenclave
    struct.pack_into("<HH", buf, _ISV_PROD_ID, isv_prod_id, isv_svn)
    signature = key.sign(_signed_bytes(bytes(buf)), padding.PKCS1v15(), hashes.SHA256())
    sig_int = int.from_bytes(signature, "big")
    buf[_SIGNATURE : _SIGNATURE + _KEY_BYTES] = sig_int.to_bytes(_KEY_BYTES, "little")
    q1, q2 = _q1_q2(sig_int, numbers.n)
    buf[_Q1 : _Q1 + _KEY_BYTES] = q1.to_bytes(_KEY_BYTES, "little")
    buf[_Q2 : _Q2 + _KEY_BYTES] = q2.to_bytes(_KEY_BYTES, "little")
    return bytes(buf)
