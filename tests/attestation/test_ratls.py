"""RA-TLS certificates: the real Gramine certificate and certificates we build."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import subprocess
import uuid
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import ratls
from mse_base._internal.simulation.pki import SimulationPKI, SimulationQuoteProvider
from mse_base.errors import UsageError, VerificationError
from tests.certs import with_extensions

DEPLOYMENT = uuid.UUID("533a2b83-4bc5-4a9c-955e-208c530bfd15")
EXPIRY = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)


def _report_data(quote: bytes) -> bytes:
    return quote[48 + 320 : 48 + 384]


@pytest.fixture(scope="module")
def gramine_cert(shared: Path) -> x509.Certificate:
    return ratls.load_certificate((shared / "gramine_ratls" / "cert.pem").read_bytes())


@pytest.fixture(scope="module")
def sim_cert(sim_pki: SimulationPKI) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    provider = SimulationQuoteProvider(
        mrenclave=bytes(32), mrsigner=bytes(32), directory=sim_pki.directory
    )
    quote = provider.quote(ratls.report_data_for_key(key.public_key()))
    cert = ratls.build_certificate(
        key=key, host="localhost", deployment_id=DEPLOYMENT, not_after=EXPIRY, quote=quote
    )
    return key, cert


def test_gramine_certificate(shared: Path, gramine_cert: x509.Certificate) -> None:
    quote = ratls.extract_evidence(gramine_cert)[0].quote
    assert quote == (shared / "gramine_ratls" / "quote.bin").read_bytes()
    assert ratls.check_key_binding(gramine_cert, _report_data(quote)) == "spki-sha256"
    assert _report_data(quote)[:32].hex().startswith("e85653f3")
    ratls.check_self_signature(gramine_cert)
    assert gramine_cert.subject.rfc4514_string() == "C=US,O=GramineDevelopers,CN=RATLS"


def test_gramine_certificate_der_input(shared: Path) -> None:
    pem = (shared / "gramine_ratls" / "cert.pem").read_bytes()
    der = subprocess.run(
        ["openssl", "x509", "-outform", "DER"], input=pem, capture_output=True, check=True
    ).stdout
    cert = ratls.load_certificate(der)
    ratls.check_self_signature(cert)
    quote = (shared / "gramine_ratls" / "quote.bin").read_bytes()
    assert ratls.extract_evidence(cert)[0].quote == quote


def test_gramine_signature_tamper_detected(shared: Path) -> None:
    pem = (shared / "gramine_ratls" / "cert.pem").read_bytes()
    der = bytearray(
        subprocess.run(
            ["openssl", "x509", "-outform", "DER"], input=pem, capture_output=True, check=True
        ).stdout
    )
    # Flip a byte inside the quote extension: the certificate still parses, the signature fails.
    index = der.index(bytes.fromhex("939a7233f79c4ca9"))
    der[index] ^= 0x01
    cert = ratls.load_certificate(bytes(der))
    with pytest.raises(VerificationError, match="self-signature"):
        ratls.check_self_signature(cert)


def test_wrong_binding_rejected(gramine_cert: x509.Certificate) -> None:
    with pytest.raises(VerificationError, match="does not bind"):
        ratls.check_key_binding(gramine_cert, bytes(64))
    good = _report_data(ratls.extract_evidence(gramine_cert)[0].quote)
    with pytest.raises(VerificationError, match="last 32 bytes"):
        ratls.check_key_binding(gramine_cert, good[:32] + b"\x01" * 32)
    with pytest.raises(VerificationError, match="64"):
        ratls.check_key_binding(gramine_cert, good[:32])


def test_built_certificate_fields(
    sim_cert: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> None:
    key, cert = sim_cert
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "localhost"
    serial = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
    assert serial == str(DEPLOYMENT)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_cert_sign
    assert cert.not_valid_after_utc == EXPIRY
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ratls.QUOTE_OID_LEGACY))
    assert not ext.critical
    # The OID bytes are exactly Gramine's (06 09 2a 86 48 86 f8 4d 8a 39 06).
    der = cert.public_bytes(serialization.Encoding.DER)
    assert bytes.fromhex("060b06092a864886f84d8a3906") in der
    quote = ratls.extract_evidence(cert)[0].quote
    assert ratls.check_key_binding(cert, _report_data(quote)) == "spki-sha256"
    ratls.check_self_signature(cert)


def test_report_data_for_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ratls.report_data_for_key(key) == hashlib.sha256(spki).digest() + bytes(32)


def test_ip_host_gets_ip_san(sim_pki: SimulationPKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ratls.build_certificate(
        key=key, host="127.0.0.1", deployment_id=DEPLOYMENT, not_after=EXPIRY, quote=b"q"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == []


def test_openssl_reads_built_certificate(
    tmp_path: Path, sim_cert: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    _, cert = sim_cert
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    text = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CA:TRUE" in text
    assert "DNS:localhost" in text
    assert "0.6.9.42.840.113741.1337.6" in text
    # The certificate is its own trust anchor: openssl verify accepts it as CA file.
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(path), "-verify_hostname", "localhost", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_build_rejects_bad_inputs() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(UsageError, match="P-256"):
        ratls.build_certificate(
            key=p384, host="h", deployment_id=DEPLOYMENT, not_after=EXPIRY, quote=b"q"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    past = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(UsageError, match="expiry"):
        ratls.build_certificate(
            key=key, host="h", deployment_id=DEPLOYMENT, not_after=past, quote=b"q"
        )
    with pytest.raises(UsageError, match="empty"):
        ratls.build_certificate(
            key=key, host="h", deployment_id=DEPLOYMENT, not_after=EXPIRY, quote=b""
        )


def _cert_with(extensions: list[tuple[str, bytes]]) -> x509.Certificate:
    return with_extensions(ec.generate_private_key(ec.SECP256R1()), extensions)


def test_extract_from_all_three_oids(shared: Path) -> None:
    quote = (shared / "gramine_ratls" / "quote.bin").read_bytes()
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(32)])})
    evidence = cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, [quote, claims]))
    for oid, value in (
        (ratls.QUOTE_OID_LEGACY, quote),
        (ratls.QUOTE_OID, quote),
        (ratls.TCG_DICE_TAGGED_EVIDENCE_OID, evidence),
    ):
        assert ratls.extract_evidence(_cert_with([(oid, value)]))[0].quote == quote, oid


def test_each_extension_is_its_own_evidence() -> None:
    # Gramine >= 1.8 writes two different quotes; the DICE one comes first, as Gramine's
    # verifier prefers it, and carries its claims.
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(32)])})
    evidence = cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, [b"dice", claims]))
    cert = _cert_with(
        [
            (ratls.QUOTE_OID_LEGACY, b"legacy"),
            (ratls.TCG_DICE_TAGGED_EVIDENCE_OID, evidence),
            (ratls.QUOTE_OID, b"intended"),
        ]
    )
    assert ratls.extract_evidence(cert) == (
        ratls.Evidence(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, b"dice", claims),
        ratls.Evidence(ratls.QUOTE_OID_LEGACY, b"legacy"),
        ratls.Evidence(ratls.QUOTE_OID, b"intended"),
    )
    assert ratls.extract_evidence(cert)[0].quote == b"dice"


def test_extract_refuses_missing_and_malformed() -> None:
    with pytest.raises(VerificationError, match="no SGX quote in the certificate"):
        ratls.extract_evidence(_cert_with([]))
    bad_tag = cbor2.dumps(cbor2.CBORTag(1234, [b"q", b"c"]))
    with pytest.raises(VerificationError, match="60000"):
        ratls.extract_evidence(_cert_with([(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, bad_tag)]))
    with pytest.raises(VerificationError, match="CBOR"):
        ratls.extract_evidence(_cert_with([(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, b"\xff\x00")]))
    not_list = cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, b"q"))
    with pytest.raises(VerificationError, match="claims"):
        ratls.extract_evidence(_cert_with([(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, not_list)]))
    for parts, message in (
        ([b"q", 5], "two non-empty byte strings"),
        ([b"q", b""], "two non-empty byte strings"),
        ([b"q", b"c", b"x"], "not a CBOR array"),
    ):
        value = cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, parts))
        with pytest.raises(VerificationError, match=message):
            ratls.extract_evidence(_cert_with([(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, value)]))


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"", "truncated CBOR"),
        (b"\x5f\x41q\xff", "indefinite-length"),  # indefinite bstr
        (b"\x41q\x41c\x00", "1 trailing bytes"),
        (b"\xc2\x41\x01", "CBOR tag 2 is not allowed"),  # a bignum instead of the quote
        (b"\x41q" + b"\x81" * 40 + b"\x00", "nested deeper"),
        (b"\x5b" + (2**62).to_bytes(8, "big"), "truncated CBOR"),  # huge declared length
    ],
)
def test_dice_evidence_cbor_must_be_strict(tail: bytes, message: str) -> None:
    value = b"\xd9\xea\x60\x82" + tail  # tag 60000, array of 2
    with pytest.raises(VerificationError, match=message):
        ratls.extract_evidence(_cert_with([(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, value)]))


def _key_and_cert() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, with_extensions(key, [])


def _dice_binding(cert: x509.Certificate, claims: bytes) -> str:
    evidence = ratls.Evidence(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, b"quote", claims)
    return ratls.check_evidence_binding(cert, evidence, hashlib.sha256(claims).digest() + bytes(32))


def test_dice_claims_binding() -> None:
    key, cert = _key_and_cert()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for alg, name in ((1, "sha256"), (7, "sha384"), (8, "sha512")):
        entry = cbor2.dumps([alg, hashlib.new(name, spki).digest()])
        assert _dice_binding(cert, cbor2.dumps({"pubkey-hash": entry, "nonce": b"n"})) == (
            "dice-claims"
        )
    good_entry = cbor2.dumps([1, hashlib.sha256(spki).digest()])
    # The quote must hash the exact claims bytes, with a zero tail.
    claims = cbor2.dumps({"pubkey-hash": good_entry})
    evidence = ratls.Evidence(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, b"quote", claims)
    with pytest.raises(VerificationError, match="not the SHA-256 of its claims"):
        ratls.check_evidence_binding(cert, evidence, bytes(64))
    with pytest.raises(VerificationError, match="last 32 bytes are not zero"):
        ratls.check_evidence_binding(cert, evidence, hashlib.sha256(claims).digest() + b"\x01" * 32)
    # A claims map with the same "pubkey-hash" key twice: the last would win in cbor2.
    twice = b"\xa2" + (cbor2.dumps("pubkey-hash") + cbor2.dumps(good_entry)) * 2
    other = cbor2.dumps([1, bytes(32)])
    for claims, message in (
        (cbor2.dumps([good_entry]), "not a CBOR map"),
        (cbor2.dumps({"nonce": b"n"}), 'no "pubkey-hash" claim'),
        (cbor2.dumps({"pubkey-hash": good_entry, 1: b"x"}), "not a text string"),
        (b"\xa1\x81\x00\x00", "not a text string"),  # an array as a key
        (twice, "appears twice"),
        (cbor2.dumps({"pubkey-hash": [1, bytes(32)]}), "not a byte string"),
        (cbor2.dumps({"pubkey-hash": cbor2.dumps([2, bytes(32)])}), "hash algorithm 2"),
        (cbor2.dumps({"pubkey-hash": cbor2.dumps([True, bytes(32)])}), "hash algorithm True"),
        (cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(48)])}), "not a 32-byte string"),
        (cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(32), 0])}), "not a CBOR array"),
        (cbor2.dumps({"pubkey-hash": other}), "does not match"),
        (cbor2.dumps({"pubkey-hash": good_entry + b"\x00"}), "trailing"),
        (cbor2.dumps({"pubkey-hash": good_entry, "x": cbor2.CBORTag(1, 0)}), "CBOR tag 1"),
    ):
        with pytest.raises(VerificationError, match=message):
            _dice_binding(cert, claims)


def test_ec_point_binding_of_older_mse_certificates() -> None:
    key, cert = _key_and_cert()
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    digest = hashlib.sha256(point).digest()
    assert ratls.check_key_binding(cert, digest + bytes(32)) == "ec-point-sha256"
    # Like the SPKI rule, the second half must be zero: the quote vouches for the key only.
    with pytest.raises(VerificationError, match=r"\(ec-point-sha256\), but its last 32 bytes"):
        ratls.check_key_binding(cert, digest + b"\xaa" * 32)


def test_load_certificate_rejects_garbage() -> None:
    with pytest.raises(VerificationError, match="cannot be parsed"):
        ratls.load_certificate(b"\x30\x03\x02\x01\x01")
    with pytest.raises(VerificationError):
        ratls.load_certificate(
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
        )


def test_naive_times_are_utc() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ratls.build_certificate(
        key=key,
        host="h",
        deployment_id=DEPLOYMENT,
        not_after=dt.datetime(2031, 1, 1),
        not_before=dt.datetime(2025, 1, 1),
        quote=b"q",
    )
    assert cert.not_valid_after_utc == EXPIRY
    assert cert.not_valid_before_utc == dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
