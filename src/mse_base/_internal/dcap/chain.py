"""X.509 building blocks for quote verification: the pinned Intel root, chains, CRLs, raw ECDSA.

The chains in DCAP are fixed-shape (root -> CA -> leaf, or root -> TCB signing leaf), so they are
checked link by link with :mod:`cryptography` rather than handed to a general path builder: each
link must be directly issued by the next (names and signature), every certificate must be inside
its validity window, CA certificates must say CA:TRUE, leaves must not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mse_base._internal.dcap.errors import CertificateChainError, CollateralError
from mse_base._internal.utc import iso

# SHA-256 of the Intel SGX Root CA's SubjectPublicKeyInfo (P-256 point 04 0ba9c4c0...ae7394).
# The shipped DER file must carry exactly this key; a swapped file fails loudly.
INTEL_SGX_ROOT_SPKI_SHA256 = "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"

# Strict PEM: nothing but BEGIN/END lines and base64 lines, one line break between blocks. Any
# slack (stray text, other whitespace) would let bytes of the quote change without any check
# noticing.
_PEM_BLOCK = (
    rb"-----BEGIN CERTIFICATE-----\r?\n(?:[A-Za-z0-9+/=]{1,76}\r?\n)+-----END CERTIFICATE-----"
)
_PEM_CHAIN = re.compile(rb"(?:" + _PEM_BLOCK + rb"\r?\n)+")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def spki_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(spki_der(cert)).hexdigest()


def same_public_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    return spki_der(a) == spki_der(b)


def public_key(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateChainError(f"{_cn(cert)}: unusable public key ({exc})") from None


def spki_der(cert: x509.Certificate) -> bytes:
    return public_key(cert).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@functools.cache
def intel_sgx_root() -> x509.Certificate:
    """The Intel SGX Root CA shipped in ``mse_base/_store``, checked against the pinned key."""
    data = (
        importlib.resources.files("mse_base").joinpath("_store/intel_sgx_root_ca.der").read_bytes()
    )
    cert = x509.load_der_x509_certificate(data)
    if spki_sha256(cert) != INTEL_SGX_ROOT_SPKI_SHA256:
        raise CertificateChainError(
            "the packaged Intel SGX Root CA (mse_base/_store/intel_sgx_root_ca.der) does not "
            "carry Intel's pinned public key; reinstall mse-base"
        )
    return cert


def load_pem_chain(pem: bytes, what: str, count: int) -> tuple[x509.Certificate, ...]:
    """Exactly ``count`` PEM certificates and nothing but whitespace around them."""
    if not _PEM_CHAIN.fullmatch(pem):
        raise CertificateChainError(f"{what}: not a sequence of PEM certificates")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateChainError(f"{what}: invalid certificate ({exc})") from None
    if len(certs) != count:
        raise CertificateChainError(f"{what}: expected {count} certificates, found {len(certs)}")
    return tuple(certs)


def check_root_copy(copy: x509.Certificate, root: x509.Certificate, what: str) -> None:
    """A chain's copy of the root must carry the trusted key and a valid self-signature.

    Comparing keys alone would leave the rest of the copy unchecked (and so malleable).
    """
    if copy == root:  # byte-identical to the configured root
        return
    if spki_der(copy) != spki_der(root):
        raise CertificateChainError(f"{what}: does not end at the trusted root")
    check_issued_by(copy, root, f"{what}: root certificate")


def issuer_under_root(
    pem: bytes, root: x509.Certificate, what: str, role: str, *, ca: bool
) -> x509.Certificate:
    """The first certificate of a PEM chain (issuer, copy of ``root``), issued by ``root`` and a
    CA or not as ``ca`` says: the TCB signing chain, or the PCK CRL's PCK CA chain.
    """
    issuer, root_copy = load_pem_chain(pem, what, 2)
    check_root_copy(root_copy, root, what)
    check_issued_by(issuer, root, f"{what}: {role}")
    check_ca(issuer, f"{what}: {role}", ca=ca)
    return issuer


def check_issued_by(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        detail = str(exc) or "bad signature"
        raise CertificateChainError(f"{what}: not issued by {_cn(parent)} ({detail})") from None


def check_validity(cert: x509.Certificate, at: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateChainError(
            f"{what} ({_cn(cert)}) is not valid at {iso(at)}: valid from "
            f"{iso(cert.not_valid_before_utc)} to "
            f"{iso(cert.not_valid_after_utc)}"
        )


def extensions(cert: x509.Certificate, what: str) -> x509.Extensions:
    """The certificate's extensions; malformed or duplicated ones are a chain error."""
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateChainError(f"{what}: invalid extensions ({exc})") from None


def check_ca(cert: x509.Certificate, what: str, *, ca: bool) -> None:
    try:
        is_ca = extensions(cert, what).get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca != ca:
        want = "a CA (basicConstraints CA:TRUE)" if ca else "an end-entity (not CA)"
        raise CertificateChainError(f"{what} ({_cn(cert)}) must be {want}")


def ec_p256_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = public_key(cert)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateChainError(f"{what}: key must be ECDSA P-256")
    return key


def verify_raw_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Verify a raw ``r||s`` P-256 signature (the DCAP wire form) over SHA-256 of ``data``."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
        # Force the lazy parts now, so a malformed CRL fails here and not in a later lookup.
        _ = crl.next_update_utc, crl.last_update_utc, crl.issuer, len(crl)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CollateralError(f"{what}: not a DER CRL ({exc})") from None
    return crl


def check_crl_signed_by(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, what: str
) -> None:
    if crl.issuer != issuer.subject:
        raise CollateralError(
            f"{what}: issuer {crl.issuer.rfc4514_string()} is not {issuer.subject.rfc4514_string()}"
        )
    key = ec_p256_key(issuer, f"{what} issuer")
    try:
        ok = crl.is_signature_valid(key)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise CollateralError(f"{what}: signature does not verify with {_cn(issuer)}")


def check_crl_window(
    crl: x509.CertificateRevocationList, at: datetime, what: str, *, allow_stale: bool
) -> None:
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if at < this_update:
        raise CollateralError(f"{what}: not yet valid at {iso(at)} (thisUpdate {iso(this_update)})")
    if next_update is None:
        raise CollateralError(f"{what}: has no nextUpdate")
    if at > next_update and not allow_stale:
        raise CollateralError(
            f"{what}: stale at {iso(at)} (nextUpdate "
            f"{iso(next_update)}); fetch a fresh CRL (only "
            "allow_stale_crls / --insecure-allow-stale-crl skips this check)"
        )


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
