"""RA-TLS certificates: a self-signed TLS certificate that carries the enclave's SGX quote.

The quote's report data binds the certificate's public key, so a client that verifies the quote
and the binding knows the TLS key lives in the attested enclave.

Writing. We write the legacy format Gramine's RA-TLS library writes (``tools/sgx/ra-tls/
ra_tls_attest.c``, ``generate_quote_with_pk_hash``), so Gramine's verifiers and ours both accept
our certificates:

* the quote, raw, in a non-critical extension under :data:`QUOTE_OID_LEGACY`: the OID Gramine's
  legacy code really encodes (it meant ``1.2.840.113741.1337.6`` but put that OID's own DER
  header into the value, so it decodes as ``0.6.9.42.840.113741.1337.6``);
* ``report_data[0:32]`` = SHA-256 of the SubjectPublicKeyInfo DER, ``report_data[32:64]`` = 0.

Reading. Every quote-carrying extension is its own piece of evidence with its own binding rule
(:func:`extract_evidence`, :func:`check_evidence_binding`):

* :data:`QUOTE_OID_LEGACY` or :data:`QUOTE_OID`, the raw quote: ``report_data[0:32]`` = SHA-256
  of the SubjectPublicKeyInfo DER (``"spki-sha256"``) or, for older MSE certificates, of the
  uncompressed EC point (``"ec-point-sha256"``); ``report_data[32:64]`` zero either way.
* :data:`TCG_DICE_TAGGED_EVIDENCE_OID` (Gramine >= 1.8 writes it next to the legacy one, with a
  second quote; ``ra_tls_attest.c`` ``generate_tcg_dice_tagged_evidence``): CBOR tag 60000 over
  ``[quote bstr, claims bstr]``; ``report_data[0:32]`` = SHA-256 of the claims bytes,
  ``report_data[32:64]`` zero; the claims are a CBOR map with text keys whose ``"pubkey-hash"``
  entry is a bstr holding ``[hash-alg-id, digest]`` of the SubjectPublicKeyInfo DER
  (``"dice-claims"``). The CBOR must be definite-length, untagged apart from the outer 60000,
  without trailing bytes or duplicate claim names.

A certificate whose quote extension is critical, or that has any other critical extension we do
not recognise, is refused (Gramine refuses the first; RFC 5280 section 4.2 the second).

Gramine sources cited here: gramineproject/gramine ``tools/sgx/ra-tls/`` at commit ff71d7af
(2025-06-20).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cbor2
from asn1crypto import algos, core, pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from mse_base._internal.dcap import chain
from mse_base._internal.dcap.quote import MAX_QUOTE_SIZE, REPORT_DATA_SIZE
from mse_base.errors import UsageError, VerificationError

__all__ = [
    "MAX_CERTIFICATE_SIZE",
    "QUOTE_OID",
    "QUOTE_OID_LEGACY",
    "TCG_DICE_TAGGED_EVIDENCE_OID",
    "Evidence",
    "build_certificate",
    "check_evidence_binding",
    "check_key_binding",
    "check_self_signature",
    "extract_evidence",
    "load_certificate",
    "report_data_for_key",
]

QUOTE_OID_LEGACY = "0.6.9.42.840.113741.1337.6"
QUOTE_OID = "1.2.840.113741.1337.6"
TCG_DICE_TAGGED_EVIDENCE_OID = "2.23.133.5.4.9"
# IANA CBOR tag "tee quote" (Gramine's TCG_DICE_TAGGED_EVIDENCE_TEE_QUOTE_CBOR_TAG): the tagged
# item is [bstr quote, bstr claims].
TEE_QUOTE_CBOR_TAG = 60000

# The most a certificate file read from disk may hold. Gramine's certificates carry two quotes
# (the legacy extension and the DICE one), each at most MAX_QUOTE_SIZE; PEM adds a third to the
# DER; the names, key and signature are a few hundred bytes. So 4 quotes' worth is ample, and a
# file larger than that is not a certificate we could accept.
MAX_CERTIFICATE_SIZE = 4 * MAX_QUOTE_SIZE

KeyBinding = Literal["spki-sha256", "ec-point-sha256", "dice-claims"]

# X.520 ub-common-name: a longer host cannot go in the CN; the SAN still carries it.
_CN_MAX = 64
_CLOCK_SKEW = dt.timedelta(minutes=5)


def report_data_for_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 64 report-data bytes that bind ``public_key``: SHA-256(SPKI DER) || 32 zero bytes."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest() + bytes(32)


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
    subject: x509.Name | None = None,
    sans: Sequence[str] = (),
) -> x509.Certificate:
    """The self-signed RA-TLS certificate for ``host`` carrying ``quote``.

    Choices, and why:

    * EC P-256 key, ECDSA-SHA256 signature: what every TLS client accepts.
    * SAN = ``host`` (an IP address SAN when ``host`` parses as one, else a DNS name), then
      each of ``sans`` alike; CN = host too, for clients that still display it, unless
      ``subject`` gives the subject's attributes instead.
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
    if subject is not None:
        # The given names, then the deployment UUID, as in the default subject.
        name = x509.Name([*subject.rdns, x509.RelativeDistinguishedName(attributes[-1:])])
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
        .add_extension(
            x509.SubjectAlternativeName([_subject_alt_name(n) for n in (host, *sans)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(QUOTE_OID_LEGACY), quote),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


# --- reading: evidence and key bindings -------------------------------------------------------

_QUOTE_OIDS = (QUOTE_OID_LEGACY, QUOTE_OID)
# Extensions a critical flag may sit on: the standard ones whose meaning we (or the TLS stack)
# understand. Any other critical extension means the issuer expects a check we do not make.
_KNOWN_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
        ExtensionOID.KEY_USAGE.dotted_string,
        ExtensionOID.EXTENDED_KEY_USAGE.dotted_string,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,
    }
)
# hash-alg-id values of the IANA "Named Information Hash Algorithm Registry", the ones Gramine's
# verifier accepts (ra_tls_common.h IANA_NAMED_INFO_HASH_ALG_REGISTRY_*); Gramine writes 1.
_PUBKEY_HASH_ALGORITHMS = {1: "sha256", 7: "sha384", 8: "sha512"}
_CBOR_MAX_DEPTH = 16
_ZERO_TAIL = bytes(32)


@dataclass(frozen=True)
class Evidence:
    """One quote-carrying extension: its OID, its quote and, for TCG DICE, the claims bytes."""

    oid: str
    quote: bytes
    claims: bytes | None = None


def _cbor_head(data: bytes, pos: int, what: str) -> tuple[int, int, int]:
    """(major type, argument, next position) of the CBOR item head at ``pos``."""
    if pos >= len(data):
        raise VerificationError(f"{what}: truncated CBOR", check="ratls.evidence")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise VerificationError(
            f"{what}: indefinite-length or reserved CBOR encoding (only definite lengths are "
            "accepted)",
            check="ratls.evidence",
        )
    end = pos + (1 << (info - 24))
    if end > len(data):
        raise VerificationError(f"{what}: truncated CBOR", check="ratls.evidence")
    return major, int.from_bytes(data[pos:end], "big"), end


def _cbor_check(data: bytes, what: str, *, tag: int | None = None) -> tuple[int, int]:
    """Check that ``data`` is exactly one definite-length CBOR item with no tags (but ``tag``
    around the whole item, when given) and nothing after it; return the (major type, argument)
    of the item inside the tag.

    We walk the item heads ourselves, before cbor2 decodes anything, because cbor2 interprets
    many tags (bignums, regular expressions, MIME, dates, shared references) while decoding and
    the older releases ``pyproject.toml`` allows have no switch to refuse indefinite lengths.
    """
    pos = 0
    if tag is not None:
        major, value, pos = _cbor_head(data, pos, what)
        if major != 6 or value != tag:
            raise VerificationError(
                f"{what}: not CBOR tag {tag} (TEE quote)", check="ratls.evidence"
            )
    top: tuple[int, int] | None = None
    remaining = [1]
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        major, value, pos = _cbor_head(data, pos, what)
        if top is None:
            top = (major, value)
        if major == 6:
            raise VerificationError(
                f"{what}: CBOR tag {value} is not allowed here", check="ratls.evidence"
            )
        if major in (2, 3):
            if value > len(data) - pos:
                raise VerificationError(f"{what}: truncated CBOR", check="ratls.evidence")
            pos += value
        elif major in (4, 5) and value:
            # Each item takes at least one byte, so a huge count just runs out of data.
            remaining.append(value if major == 4 else 2 * value)
            if len(remaining) > _CBOR_MAX_DEPTH:
                raise VerificationError(
                    f"{what}: CBOR nested deeper than {_CBOR_MAX_DEPTH}", check="ratls.evidence"
                )
    if pos != len(data):
        raise VerificationError(
            f"{what}: {len(data) - pos} trailing bytes after the CBOR item", check="ratls.evidence"
        )
    if top is None:  # unreachable: the loop reads at least one head
        raise VerificationError(f"{what}: empty CBOR", check="ratls.evidence")
    return top


def _cbor_decode(data: bytes, what: str) -> object:
    """Decode ``data`` already accepted by :func:`_cbor_check`."""
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as err:
        raise VerificationError(f"{what}: invalid CBOR ({err})", check="ratls.evidence") from err


def _dice_evidence(value: bytes) -> Evidence:
    """Gramine's TCG DICE tagged evidence: tag 60000 over a definite [quote bstr, claims bstr]
    (``ra_tls_attest.c`` ``combine_quote_and_claims_in_evidence``).
    """
    what = "the TCG DICE evidence extension"
    if _cbor_check(value, what, tag=TEE_QUOTE_CBOR_TAG) != (4, 2):
        raise VerificationError(
            f"{what}: not a CBOR array of [quote, claims]", check="ratls.evidence"
        )
    item = _cbor_decode(value, what)
    evidence = item.value if isinstance(item, cbor2.CBORTag) else None
    if (
        # cbor2 decodes an array under an unknown tag as a tuple (a list elsewhere).
        not isinstance(evidence, list | tuple)
        or len(evidence) != 2
        or not all(type(part) is bytes and part for part in evidence)
    ):
        raise VerificationError(
            f"{what}: not [quote, claims] as two non-empty byte strings", check="ratls.evidence"
        )
    return Evidence(TCG_DICE_TAGGED_EVIDENCE_OID, evidence[0], evidence[1])


def extract_evidence(cert: x509.Certificate) -> tuple[Evidence, ...]:
    """Every quote-carrying extension of ``cert``, the TCG DICE one first (Gramine's verifier
    prefers it: ``ra_tls_verify_common.c`` ``extract_quote_and_verify_claims``), then the others
    in certificate order. Raises if there is none, if one is malformed, if a quote extension is
    critical (Gramine's ``find_oid_in_cert_extensions`` refuses that) or if an extension we do
    not recognise is critical (RFC 5280 section 4.2).
    """
    extensions = list(chain.extensions(cert, "the RA-TLS certificate", "ratls.evidence"))
    dice: list[Evidence] = []
    legacy: list[Evidence] = []
    for ext in extensions:
        oid = ext.oid.dotted_string
        carries_quote = oid in _QUOTE_OIDS or oid == TCG_DICE_TAGGED_EVIDENCE_OID
        if ext.critical and carries_quote:
            raise VerificationError(
                f"the certificate's quote extension {oid} is marked critical; RA-TLS quote "
                "extensions must be non-critical",
                check="ratls.evidence",
            )
        if ext.critical and oid not in _KNOWN_CRITICAL:
            raise VerificationError(
                f"the certificate has an unrecognised critical extension {oid} (RFC 5280 4.2)",
                check="ratls.evidence",
            )
        if not carries_quote or not isinstance(ext.value, x509.UnrecognizedExtension):
            continue
        raw = bytes(ext.value.value)
        if oid == TCG_DICE_TAGGED_EVIDENCE_OID:
            dice.append(_dice_evidence(raw))
        else:
            legacy.append(Evidence(oid, raw))
    if not dice and not legacy:
        raise VerificationError("no SGX quote in the certificate", check="ratls.evidence")
    return (*dice, *legacy)


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise VerificationError(
            f"report data is {len(report_data)} bytes, expected 64", check="ratls.key_binding"
        )


def check_key_binding(cert: x509.Certificate, report_data: bytes) -> KeyBinding:
    """Which rule binds ``cert``'s public key to the ``report_data`` of a raw (legacy-OID) quote.

    ``"spki-sha256"``: Gramine's rule (``ra_tls_verify_common.c``
    ``cmp_crt_pk_against_quote_report_data``), ``report_data[0:32]`` = SHA-256(SubjectPublicKeyInfo
    DER). ``"ec-point-sha256"``: older MSE certificates, ``report_data[0:32]`` = SHA-256 of the
    uncompressed SEC1 EC point. Both require ``report_data[32:64]`` zero, so the quote cannot
    also vouch for something else. Anything else raises :class:`VerificationError`.
    """
    _check_report_data(report_data)
    digest, tail = report_data[:32], report_data[32:]
    public_key = cert.public_key()
    binding: KeyBinding | None = None
    if hashlib.sha256(chain.spki_der(cert, chain.RATLS_CERTIFICATE)).digest() == digest:
        binding = "spki-sha256"
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        point = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        if hashlib.sha256(point).digest() == digest:
            binding = "ec-point-sha256"
    if binding is None:
        raise VerificationError(
            "the quote's report data does not bind the certificate's public key "
            "(neither SHA-256 of its SubjectPublicKeyInfo nor of its EC point)",
            check="ratls.key_binding",
        )
    if tail != _ZERO_TAIL:
        raise VerificationError(
            f"report data binds the certificate key ({binding}), but its last 32 bytes are not "
            "zero",
            check="ratls.key_binding",
        )
    return binding


def _check_dice_claims(cert: x509.Certificate, claims: bytes) -> None:
    """The claims map's ``"pubkey-hash"`` names ``cert``'s SubjectPublicKeyInfo DER
    (``ra_tls_verify_common.c`` ``cmp_crt_pk_against_cbor_claim_hash_entry``).
    """
    what = "the TCG DICE claims"
    major, count = _cbor_check(claims, what)
    decoded = _cbor_decode(claims, what)
    if major != 5 or not isinstance(decoded, dict):
        raise VerificationError(f"{what}: not a CBOR map", check="ratls.evidence")
    if len(decoded) != count:
        raise VerificationError(f"{what}: a claim name appears twice", check="ratls.evidence")
    if not all(type(name) is str for name in decoded):
        raise VerificationError(
            f"{what}: a claim name is not a text string", check="ratls.evidence"
        )
    entry = decoded.get("pubkey-hash")
    if entry is None:
        raise VerificationError(f'{what}: no "pubkey-hash" claim', check="ratls.evidence")
    if type(entry) is not bytes:
        raise VerificationError(
            f'{what}: "pubkey-hash" is not a byte string', check="ratls.evidence"
        )
    what = 'the TCG DICE "pubkey-hash" claim'
    if _cbor_check(entry, what) != (4, 2):
        raise VerificationError(
            f"{what}: not a CBOR array [hash-alg-id, digest]", check="ratls.evidence"
        )
    pair = _cbor_decode(entry, what)
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise VerificationError(
            f"{what}: not a CBOR array [hash-alg-id, digest]", check="ratls.evidence"
        )
    algorithm_id, digest = pair
    name = _PUBKEY_HASH_ALGORITHMS.get(algorithm_id) if type(algorithm_id) is int else None
    if name is None:
        raise VerificationError(
            f"{what}: hash algorithm {algorithm_id!r} is not SHA-256 (1), SHA-384 (7) or "
            "SHA-512 (8)",
            check="ratls.evidence",
        )
    expected = hashlib.new(name, chain.spki_der(cert, chain.RATLS_CERTIFICATE)).digest()
    if type(digest) is not bytes or len(digest) != len(expected):
        raise VerificationError(
            f"{what}: the digest is not a {len(expected)}-byte string", check="ratls.evidence"
        )
    if digest != expected:
        raise VerificationError(
            f"{what}: does not match the {name.upper()} of the certificate's public key",
            check="ratls.key_binding",
        )


def check_evidence_binding(
    cert: x509.Certificate, evidence: Evidence, report_data: bytes
) -> KeyBinding:
    """Check that ``evidence``, whose quote has ``report_data``, binds ``cert``'s public key by
    its own rule; return the rule's name. Raises :class:`VerificationError` otherwise.

    Raw quotes: :func:`check_key_binding`. TCG DICE (``"dice-claims"``): ``report_data[0:32]`` =
    SHA-256 of the exact claims bytes and ``report_data[32:64]`` zero, as Gramine writes it
    (``ra_tls_attest.c`` ``generate_quote_with_claims_hash``), then the claims themselves.
    """
    if evidence.claims is None:
        return check_key_binding(cert, report_data)
    _check_report_data(report_data)
    if report_data[:32] != hashlib.sha256(evidence.claims).digest():
        raise VerificationError(
            "the TCG DICE quote's report data is not the SHA-256 of its claims",
            check="ratls.key_binding",
        )
    if report_data[32:] != _ZERO_TAIL:
        raise VerificationError(
            "the TCG DICE quote's report data binds its claims, but its last 32 bytes are not zero",
            check="ratls.key_binding",
        )
    _check_dice_claims(cert, evidence.claims)
    return "dice-claims"


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


def certificate_der(data: bytes) -> bytes:
    """The DER bytes of a PEM or DER certificate, exactly as given (never re-encoded)."""
    # Only a leading armor means PEM: a DER RA-TLS certificate contains PEM text (the PCK chain
    # inside its quote).
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    try:
        _, _, der = pem.unarmor(data)
    except ValueError as err:
        raise VerificationError(
            f"the certificate PEM cannot be read: {err}", check="ratls.format"
        ) from err
    return bytes(der)


def load_certificate(data: bytes) -> x509.Certificate:
    """Read a PEM or DER certificate, also the ECDSA-with-NULL-parameter ones mbedTLS writes.

    Such a certificate comes back with the NULL removed from its AlgorithmIdentifiers; every other
    byte is unchanged, and :func:`check_self_signature` still verifies its original signature.
    """
    der = certificate_der(data)
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
                f"the certificate cannot be parsed: {first_error}", check="ratls.format"
            ) from first_error


def _tbs_as_mbedtls_signed(cert: x509.Certificate) -> bytes | None:
    """The TBS bytes as mbedTLS signed them (NULL parameter restored), if they differ."""
    tbs = asn1_x509.TbsCertificate.load(cert.tbs_certificate_bytes)
    algorithm = tbs["signature"]
    if not (
        algorithm["algorithm"].native.endswith("_ecdsa")
        and isinstance(algorithm["parameters"], core.Void)
    ):
        return None
    tbs["signature"] = algos.SignedDigestAlgorithm(
        {"algorithm": algorithm["algorithm"].native, "parameters": core.Null()}
    )
    return bytes(tbs.dump())


# RA-TLS keys are ECDSA P-256 (ours) or P-384 (Gramine's ``create_key_and_crt``), signed with
# SHA-256 (both) or SHA-384: anything else is not an RA-TLS certificate we know how to read.
_SIGNATURE_HASHES: dict[x509.ObjectIdentifier, hashes.HashAlgorithm] = {
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256: hashes.SHA256(),
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384: hashes.SHA384(),
}
_CURVES = (ec.SECP256R1, ec.SECP384R1)


def check_self_signature(cert: x509.Certificate) -> None:
    """Check that ``cert`` is self-issued and signed by its own key, else VerificationError.

    Only ECDSA with SHA-256 or SHA-384 by a P-256 or P-384 key is accepted.
    """
    if cert.issuer != cert.subject:
        raise VerificationError(
            "the RA-TLS certificate is not self-issued (issuer != subject)",
            check="ratls.self_signature",
        )
    algorithm = cert.signature_algorithm_oid
    hash_algorithm = _SIGNATURE_HASHES.get(algorithm)
    if hash_algorithm is None:
        raise VerificationError(
            f"the RA-TLS certificate's signature algorithm {algorithm.dotted_string} is not "
            "supported (expected ECDSA with SHA-256 or SHA-384)",
            check="ratls.self_signature",
        )
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise VerificationError(
            f"the RA-TLS certificate's key ({kind}) is not supported (expected EC P-256 or P-384)",
            check="ratls.self_signature",
        )
    signature = ec.ECDSA(hash_algorithm)
    if _verifies(key, cert.signature, cert.tbs_certificate_bytes, signature):
        return
    # Only then the mbedTLS form, which costs an ASN.1 re-parse of the TBS.
    mbedtls = _tbs_as_mbedtls_signed(cert)
    if mbedtls is not None and _verifies(key, cert.signature, mbedtls, signature):
        return
    raise VerificationError(
        "the RA-TLS certificate's self-signature does not verify", check="ratls.self_signature"
    )


def _verifies(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, algorithm: ec.ECDSA
) -> bool:
    try:
        key.verify(signature, data, algorithm)
    except InvalidSignature:
        return False
    return True


def fetch_certificate(address: str, port: int, server_name: str) -> bytes:
    """The DER certificate a TLS server presents, fetched without any CA check.

    An RA-TLS certificate is self-signed: the quote inside it is the trust anchor, and the
    verifier checks it (and the key binding) afterwards.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    where = f"{server_name}:{port}"
    try:
        with (
            socket.create_connection((address, port), timeout=15) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, UnicodeError, ValueError) as err:
        raise VerificationError(
            f"cannot fetch the certificate from {where}: {err}", check="ratls.unreachable"
        ) from None
    if not der:
        raise VerificationError(f"{where} presented no certificate", check="ratls.unreachable")
    return der
