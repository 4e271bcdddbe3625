"""RA-TLS certificates: a self-signed TLS certificate that carries the enclave's SGX quote.

The quote's report data binds the certificate's public key, so a client that verifies the quote
and the binding knows the TLS key lives in the attested enclave. We write the format Gramine's
RA-TLS library writes (``tools/sgx/ra-tls/ra_tls_attest.c``), so Gramine's verifiers and ours
both accept our certificates:

* the quote, raw, in a non-critical extension under :data:`QUOTE_OID_LEGACY`: the OID Gramine's
  legacy code really encodes (it meant ``1.2.840.113741.1337.6`` but put that OID's own DER
  header into the value, so it decodes as ``0.6.9.42.840.113741.1337.6``);
* ``report_data[0:32]`` = SHA-256 of the SubjectPublicKeyInfo DER, ``report_data[32:64]`` = 0.

When reading, we also accept the correctly encoded :data:`QUOTE_OID`, the TCG DICE tagged
evidence extension newer Gramine writes, and the binding older MSE certificates used (SHA-256 of
the raw uncompressed EC point).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import uuid
from typing import Literal

import cbor2
from asn1crypto import algos, core, pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mse_base.errors import UsageError, VerificationError

__all__ = [
    "QUOTE_OID",
    "QUOTE_OID_LEGACY",
    "TCG_DICE_TAGGED_EVIDENCE_OID",
    "build_certificate",
    "check_key_binding",
    "check_self_signature",
    "extract_quote",
    "load_certificate",
    "report_data_for_key",
]

QUOTE_OID_LEGACY = "0.6.9.42.840.113741.1337.6"
QUOTE_OID = "1.2.840.113741.1337.6"
TCG_DICE_TAGGED_EVIDENCE_OID = "2.23.133.5.4.9"
# IANA CBOR tag "tee quote" (Gramine's TCG_DICE_TAGGED_EVIDENCE_TEE_QUOTE_CBOR_TAG): the tagged
# item is [bstr quote, bstr claims].
TEE_QUOTE_CBOR_TAG = 60000

KeyBinding = Literal["spki-sha256", "ec-point-sha256"]

_REPORT_DATA_SIZE = 64
# X.520 ub-common-name: a longer host cannot go in the CN; the SAN still carries it.
_CN_MAX = 64
_CLOCK_SKEW = dt.timedelta(minutes=5)


def _spki_der(public_key: ec.EllipticCurvePublicKey | x509.Certificate) -> bytes:
    key = public_key.public_key() if isinstance(public_key, x509.Certificate) else public_key
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def report_data_for_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 64 report-data bytes that bind ``public_key``: SHA-256(SPKI DER) || 32 zero bytes."""
    return hashlib.sha256(_spki_der(public_key)).digest() + bytes(32)


def _subject_alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _aware(moment: dt.datetime) -> dt.datetime:
    """A naive time is taken as UTC, as X.509 times are."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def build_certificate(
    *,
    key: ec.EllipticCurvePrivateKey,
    host: str,
    deployment_id: uuid.UUID,
    not_after: dt.datetime,
    quote: bytes,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """The self-signed RA-TLS certificate for ``host`` carrying ``quote``.

    Choices, and why:

    * EC P-256 key, ECDSA-SHA256 signature: what every TLS client accepts.
    * SAN = ``host`` (an IP address SAN when ``host`` parses as one, else a DNS name), CN = host
      too, for clients that still display it.
    * ``basicConstraints CA:TRUE`` (critical, pathlen 0) and ``keyUsage`` digitalSignature +
      keyCertSign: the certificate is its own trust anchor, so ``curl --cacert cert.pem`` and
      ``openssl s_client -CAfile cert.pem`` accept it without disabling verification.
    * The deployment UUID in the subject's ``serialNumber`` attribute: visible in every tool that
      prints the subject, and covered by the certificate signature.
    * The quote raw in a non-critical extension under :data:`QUOTE_OID_LEGACY`, as Gramine writes
      it, so Gramine's RA-TLS verifiers, ``intel-sgx-ra`` style tools that search the legacy OID,
      and ours all find it. The caller must have obtained ``quote`` with
      :func:`report_data_for_key` of this key as report data.
    """
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UsageError("the RA-TLS key must be an EC P-256 private key")
    if not host:
        raise UsageError("the certificate host name is empty; pass the name clients use")
    if not quote:
        raise UsageError("the SGX quote is empty")
    now = dt.datetime.now(dt.timezone.utc)
    start = _aware(not_before) if not_before is not None else now - _CLOCK_SKEW
    not_after = _aware(not_after)
    if not_after <= start:
        raise UsageError(
            f"the certificate expiry {not_after.isoformat()} is not after its start "
            f"{start.isoformat()}; pass a future expiry"
        )
    attributes = [x509.NameAttribute(NameOID.SERIAL_NUMBER, str(deployment_id))]
    if len(host) <= _CN_MAX:
        attributes.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, host))
    name = x509.Name(attributes)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([_subject_alt_name(host)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(QUOTE_OID_LEGACY), quote),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _quote_from_dice_evidence(value: bytes) -> bytes:
    """The quote inside Gramine's TCG DICE tagged evidence: tag 60000 over [quote, claims]."""
    try:
        item = cbor2.loads(value)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as err:
        raise VerificationError(
            f"the TCG DICE evidence extension is not valid CBOR: {err}"
        ) from err
    if not isinstance(item, cbor2.CBORTag) or item.tag != TEE_QUOTE_CBOR_TAG:
        raise VerificationError(
            f"the TCG DICE evidence extension is not tagged {TEE_QUOTE_CBOR_TAG} (TEE quote)"
        )
    evidence = item.value
    if (
        not isinstance(evidence, list | tuple)
        or len(evidence) != 2
        or not isinstance(evidence[0], bytes)
        or not evidence[0]
    ):
        raise VerificationError(
            "the TCG DICE evidence is not [quote, claims] with a non-empty quote"
        )
    return evidence[0]


def extract_quote(cert: x509.Certificate) -> bytes:
    """The SGX quote an RA-TLS certificate carries.

    Looks under the legacy Gramine OID, the intended OID and the TCG DICE tagged-evidence OID.
    If more than one is present they must hold the same quote: a certificate that shows one
    quote to one verifier and another to the next is refused.
    """
    try:
        extensions = list(cert.extensions)
    except ValueError as err:
        raise VerificationError(f"the certificate's extensions cannot be parsed: {err}") from err
    found: list[bytes] = []
    for ext in extensions:
        oid = ext.oid.dotted_string
        if oid not in (QUOTE_OID_LEGACY, QUOTE_OID, TCG_DICE_TAGGED_EVIDENCE_OID):
            continue
        value = ext.value
        if not isinstance(value, x509.UnrecognizedExtension):
            continue
        raw = bytes(value.value)
        found.append(_quote_from_dice_evidence(raw) if oid == TCG_DICE_TAGGED_EVIDENCE_OID else raw)
    if not found:
        raise VerificationError("no SGX quote in the certificate")
    if any(quote != found[0] for quote in found[1:]):
        raise VerificationError("the certificate carries several different SGX quotes")
    return found[0]


def check_key_binding(cert: x509.Certificate, report_data: bytes) -> KeyBinding:
    """Which rule binds ``cert``'s public key to the quote's ``report_data``.

    ``"spki-sha256"``: Gramine's rule, ``report_data[0:32]`` = SHA-256(SubjectPublicKeyInfo DER)
    and ``report_data[32:64]`` zero. ``"ec-point-sha256"``: older MSE certificates,
    ``report_data[0:32]`` = SHA-256 of the uncompressed SEC1 EC point (that scheme left the second
    half unspecified, so it is not checked). Anything else raises :class:`VerificationError`.
    """
    if len(report_data) != _REPORT_DATA_SIZE:
        raise VerificationError(f"report data is {len(report_data)} bytes, expected 64")
    digest, tail = report_data[:32], report_data[32:]
    public_key = cert.public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if hashlib.sha256(spki).digest() == digest:
        if tail != bytes(32):
            raise VerificationError(
                "report data binds the certificate key, but its last 32 bytes are not zero"
            )
        return "spki-sha256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        point = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        if hashlib.sha256(point).digest() == digest:
            return "ec-point-sha256"
    raise VerificationError(
        "the quote's report data does not bind the certificate's public key "
        "(neither SHA-256 of its SubjectPublicKeyInfo nor of its EC point)"
    )


# --- certificates written by mbedTLS ----------------------------------------------------------
#
# Gramine's RA-TLS library (mbedTLS) writes ``ecdsa-with-SHA256`` with an explicit NULL
# parameter, which RFC 5758 forbids; recent ``cryptography`` releases refuse such certificates
# (pyca/cryptography#8996). We normalise the two AlgorithmIdentifiers (drop the NULL) so the rest
# of the certificate can be read, and check the signature over the TBS bytes as they were signed.


def _is_null_param_ecdsa(algorithm: algos.SignedDigestAlgorithm) -> bool:
    parameters = algorithm["parameters"]
    # asn1crypto keeps an unknown parameter as Any; an explicit NULL dumps as 05 00.
    return bool(
        algorithm["algorithm"].native.endswith("_ecdsa")
        and not isinstance(parameters, core.Void)
        and parameters.dump() == b"\x05\x00"
    )


def _without_null(algorithm: algos.SignedDigestAlgorithm) -> algos.SignedDigestAlgorithm:
    return algos.SignedDigestAlgorithm({"algorithm": algorithm["algorithm"].native})


def load_certificate(data: bytes) -> x509.Certificate:
    """Read a PEM or DER certificate, also the ECDSA-with-NULL-parameter ones mbedTLS writes.

    Such a certificate comes back with the NULL removed from its AlgorithmIdentifiers; every other
    byte is unchanged, and :func:`check_self_signature` still verifies its original signature.
    """
    der = data
    # Only a leading armor means PEM: a DER RA-TLS certificate contains PEM text (the PCK chain
    # inside its quote).
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            _, _, der = pem.unarmor(data)
        except ValueError as err:
            raise VerificationError(f"the certificate PEM cannot be read: {err}") from err
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as first_error:
        try:
            parsed = asn1_x509.Certificate.load(der, strict=True)
            tbs = parsed["tbs_certificate"]
            if not (
                _is_null_param_ecdsa(parsed["signature_algorithm"])
                and _is_null_param_ecdsa(tbs["signature"])
            ):
                raise ValueError("not the NULL-parameter encoding")
            tbs["signature"] = _without_null(tbs["signature"])
            parsed["signature_algorithm"] = _without_null(parsed["signature_algorithm"])
            return x509.load_der_x509_certificate(parsed.dump())
        except ValueError:
            raise VerificationError(
                f"the certificate cannot be parsed: {first_error}"
            ) from first_error


def _tbs_candidates(cert: x509.Certificate) -> list[bytes]:
    """The TBS bytes as they are, and as mbedTLS signed them (NULL parameter restored)."""
    candidates = [cert.tbs_certificate_bytes]
    tbs = asn1_x509.TbsCertificate.load(cert.tbs_certificate_bytes)
    algorithm = tbs["signature"]
    if algorithm["algorithm"].native.endswith("_ecdsa") and isinstance(
        algorithm["parameters"], core.Void
    ):
        tbs["signature"] = algos.SignedDigestAlgorithm(
            {"algorithm": algorithm["algorithm"].native, "parameters": core.Null()}
        )
        candidates.append(tbs.dump())
    return candidates


def check_self_signature(cert: x509.Certificate) -> None:
    """Check that ``cert`` is self-issued and signed by its own key, else VerificationError."""
    if cert.issuer != cert.subject:
        raise VerificationError("the RA-TLS certificate is not self-issued (issuer != subject)")
    key = cert.public_key()
    hash_algorithm = cert.signature_hash_algorithm
    if hash_algorithm is None:
        raise VerificationError("the RA-TLS certificate's signature algorithm is not supported")
    for tbs in _tbs_candidates(cert):
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(cert.signature, tbs, ec.ECDSA(hash_algorithm))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(cert.signature, tbs, padding.PKCS1v15(), hash_algorithm)
            else:
                raise VerificationError(
                    f"the RA-TLS certificate's key type {type(key).__name__} is not supported"
                )
        except InvalidSignature:
            continue
        return
    raise VerificationError("the RA-TLS certificate's self-signature does not verify")
