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
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mse_base._internal.dcap.errors import CertificateChainError, CollateralError
from mse_base._internal.utc import iso
from mse_base.errors import EnvironmentMissing, FailedCheck, UsageError

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

#: What every certificate of an mse-base simulation PKI says in its subject (its OU, and the start
#: of its CN). Read only to explain why a chain was refused, never to accept one.
SIMULATION_MARK = "MSE SIMULATION — NOT SGX"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class ChainChecks(NamedTuple):
    """The failed checks a certificate chain reports: a defect, or a certificate out of its
    validity window. The helpers below serve several chains; the caller says which one."""

    chain: FailedCheck
    expired: FailedCheck
    not_yet_valid: FailedCheck


class CrlChecks(NamedTuple):
    """The failed checks a CRL reports."""

    format: FailedCheck
    signature: FailedCheck
    expired: FailedCheck
    not_yet_valid: FailedCheck


PCK_CHAIN = ChainChecks("pck.chain", "pck.chain.expired", "pck.chain.not_yet_valid")
SIGNING_CHAIN = ChainChecks(
    "collateral.signing_chain",
    "collateral.signing_chain.expired",
    "collateral.signing_chain.not_yet_valid",
)
# An RA-TLS certificate is its own chain: self-signed.
RATLS_CERTIFICATE = ChainChecks("ratls.self_signature", "ratls.expired", "ratls.not_yet_valid")
PCK_CRL = CrlChecks(
    "collateral.pck_crl.format",
    "collateral.pck_crl.signature",
    "collateral.pck_crl.expired",
    "collateral.pck_crl.not_yet_valid",
)
ROOT_CA_CRL = CrlChecks(
    "collateral.root_ca_crl.format",
    "collateral.root_ca_crl.signature",
    "collateral.root_ca_crl.expired",
    "collateral.root_ca_crl.not_yet_valid",
)


def spki_sha256(root: x509.Certificate) -> str:
    """The SHA-256 of a trust root's SubjectPublicKeyInfo: the packaged Intel root, or a root
    :func:`check_trust_root` accepted (so its key loads)."""
    return hashlib.sha256(
        root.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def public_key(cert: x509.Certificate, checks: ChainChecks) -> CertificatePublicKeyTypes:
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateChainError(
            f"{_cn(cert)}: unusable public key ({exc})", check=checks.chain
        ) from None


def spki_der(cert: x509.Certificate, checks: ChainChecks) -> bytes:
    return public_key(cert, checks).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@functools.cache
def intel_sgx_root() -> x509.Certificate:
    """The Intel SGX Root CA shipped in ``mse_base/_store``, checked against the pinned key."""
    data = (
        importlib.resources.files("mse_base").joinpath("_store/intel_sgx_root_ca.der").read_bytes()
    )
    # A damaged installation is no verdict on any quote: nothing can be verified until it is
    # reinstalled, so it is the environment's fault (exit 3), never a rejection.
    damaged = (
        "the packaged Intel SGX Root CA (mse_base/_store/intel_sgx_root_ca.der) {}; "
        "reinstall mse-base"
    )
    try:
        cert = x509.load_der_x509_certificate(data)
        pinned = spki_sha256(cert) == INTEL_SGX_ROOT_SPKI_SHA256
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EnvironmentMissing(damaged.format(f"cannot be read ({exc})")) from None
    if not pinned:
        raise EnvironmentMissing(damaged.format("does not carry Intel's pinned public key"))
    return cert


def check_trust_root(root: x509.Certificate) -> None:
    """A root trusted by configuration instead of the pinned Intel key (the simulation CA) must
    be a self-signed ECDSA P-256 CA: every signature under it is P-256, and a leaf or a
    certificate issued by another key is no root.

    A bad root is bad input, not a rejected quote: :class:`~mse_base.errors.UsageError`, whose
    message the caller prefixes with where the root came from.
    """
    try:
        key = root.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"trust root ({_cn(root)}): unusable public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        if isinstance(key, rsa.RSAPublicKey):
            kind = f"RSA-{key.key_size}"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            kind = f"ECDSA {key.curve.name}"
        else:
            kind = type(key).__name__
        raise UsageError(f"trust root ({_cn(root)}): its key is {kind}, not ECDSA P-256")
    try:
        basic = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise UsageError(f"trust root ({_cn(root)}): invalid extensions ({exc})") from None
    if not is_ca:
        raise UsageError(
            f"trust root ({_cn(root)}): not a CA certificate (no basicConstraints CA:TRUE)"
        )
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise UsageError(f"trust root ({_cn(root)}): not self-signed") from None


def load_pem_chain(
    pem: bytes, what: str, count: int, checks: ChainChecks
) -> tuple[x509.Certificate, ...]:
    """Exactly ``count`` PEM certificates and nothing but whitespace around them."""
    if not _PEM_CHAIN.fullmatch(pem):
        raise CertificateChainError(
            f"{what}: not a sequence of PEM certificates", check=checks.chain
        )
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateChainError(
            f"{what}: invalid certificate ({exc})", check=checks.chain
        ) from None
    if len(certs) != count:
        raise CertificateChainError(
            f"{what}: expected {count} certificates, found {len(certs)}", check=checks.chain
        )
    return tuple(certs)


def check_root_copy(
    copy: x509.Certificate, root: x509.Certificate, what: str, checks: ChainChecks
) -> None:
    """A chain's copy of the root must carry the trusted key and a valid self-signature.

    Comparing keys alone would leave the rest of the copy unchecked (and so malleable).
    """
    if copy == root:  # byte-identical to the configured root
        return
    if spki_der(copy, checks) != spki_der(root, checks):
        raise CertificateChainError(
            f"{what}: does not end at the trusted root{_where_it_ends(copy, root)}",
            check=checks.chain,
        )
    check_issued_by(copy, root, f"{what}: root certificate", checks)


def is_simulation_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert`` names itself a certificate of an mse-base simulation PKI.

    Anyone can write that name: it only explains a refusal (a simulation quote shown to a
    verifier that trusts Intel), and no check ever accepts anything for it.
    """
    try:
        units = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    except ValueError:
        return False
    return any(unit.value == SIMULATION_MARK for unit in units)


def chain_root(pem: bytes) -> x509.Certificate | None:
    """The last certificate of a PEM chain, or None when it does not parse (for explanations)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    return certs[-1] if certs else None


def _where_it_ends(copy: x509.Certificate, root: x509.Certificate) -> str:
    """Which root a refused chain ends at, so the reader can tell which verifier it was for."""
    try:
        # repr: the name comes from the quote, and its control or invisible characters must
        # neither break the one-line message nor hide in it.
        name = repr(_cn(copy)[:80])
    except ValueError:
        return ""
    if not is_simulation_certificate(copy):
        return f" (it ends at {name})"
    if spki_sha256(root) == INTEL_SGX_ROOT_SPKI_SHA256:
        return (
            f": it ends at {name}, an mse-base simulation CA, which only a verifier told to "
            "trust it accepts"
        )
    return f": it ends at {name}, another mse-base simulation CA than the trusted one"


def issuer_under_root(
    pem: bytes, root: x509.Certificate, what: str, role: str, checks: ChainChecks, *, ca: bool
) -> x509.Certificate:
    """The first certificate of a PEM chain (issuer, copy of ``root``), issued by ``root`` and a
    CA or not as ``ca`` says: the TCB signing chain, or the PCK CRL's PCK CA chain.
    """
    issuer, root_copy = load_pem_chain(pem, what, 2, checks)
    check_root_copy(root_copy, root, what, checks)
    check_issued_by(issuer, root, f"{what}: {role}", checks)
    check_ca(issuer, f"{what}: {role}", checks, ca=ca)
    return issuer


def check_issued_by(
    child: x509.Certificate, parent: x509.Certificate, what: str, checks: ChainChecks
) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        detail = str(exc) or "bad signature"
        raise CertificateChainError(
            f"{what}: not issued by {_cn(parent)} ({detail})", check=checks.chain
        ) from None


def check_validity(cert: x509.Certificate, at: datetime, what: str, checks: ChainChecks) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateChainError(
            f"{what} ({_cn(cert)}) is not valid at {iso(at)}: valid from "
            f"{iso(cert.not_valid_before_utc)} to "
            f"{iso(cert.not_valid_after_utc)}",
            check=checks.not_yet_valid if at < cert.not_valid_before_utc else checks.expired,
        )


def extensions(cert: x509.Certificate, what: str, check: FailedCheck) -> x509.Extensions:
    """The certificate's extensions; malformed or duplicated ones fail ``check``."""
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateChainError(f"{what}: invalid extensions ({exc})", check=check) from None


def check_ca(cert: x509.Certificate, what: str, checks: ChainChecks, *, ca: bool) -> None:
    try:
        basic = extensions(cert, what, checks.chain).get_extension_for_class(x509.BasicConstraints)
        is_ca = basic.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca != ca:
        want = "a CA (basicConstraints CA:TRUE)" if ca else "an end-entity (not CA)"
        raise CertificateChainError(f"{what} ({_cn(cert)}) must be {want}", check=checks.chain)


def ec_p256_key(
    cert: x509.Certificate, what: str, checks: ChainChecks
) -> ec.EllipticCurvePublicKey:
    key = public_key(cert, checks)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateChainError(f"{what}: key must be ECDSA P-256", check=checks.chain)
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


def load_crl(der: bytes, what: str, checks: CrlChecks) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
        # Force the lazy parts now, so a malformed CRL fails here and not in a later lookup.
        _ = crl.next_update_utc, crl.last_update_utc, crl.issuer, len(crl)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CollateralError(f"{what}: not a DER CRL ({exc})", check=checks.format) from None
    return crl


def check_crl_signed_by(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    what: str,
    checks: CrlChecks,
) -> None:
    if crl.issuer != issuer.subject:
        raise CollateralError(
            f"{what}: issuer {crl.issuer.rfc4514_string()} is not "
            f"{issuer.subject.rfc4514_string()}",
            check=checks.signature,
        )
    signer = ChainChecks(checks.signature, checks.signature, checks.signature)
    key = ec_p256_key(issuer, f"{what} issuer", signer)
    try:
        ok = crl.is_signature_valid(key)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise CollateralError(
            f"{what}: signature does not verify with {_cn(issuer)}", check=checks.signature
        )


def check_crl_window(
    crl: x509.CertificateRevocationList,
    at: datetime,
    what: str,
    checks: CrlChecks,
    *,
    allow_stale: bool,
) -> None:
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if at < this_update:
        raise CollateralError(
            f"{what}: not yet valid at {iso(at)} (thisUpdate {iso(this_update)})",
            check=checks.not_yet_valid,
        )
    if next_update is None:
        raise CollateralError(f"{what}: has no nextUpdate", check=checks.format)
    if at > next_update and not allow_stale:
        raise CollateralError(
            f"{what}: stale at {iso(at)} (nextUpdate "
            f"{iso(next_update)}); fetch a fresh CRL (only "
            "allow_stale_crls / --insecure-allow-stale-crl skips this check)",
            check=checks.expired,
        )


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
