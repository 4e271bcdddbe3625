"""verify_certificate: the real Gramine RA-TLS certificate and RA-TLS certificates built here."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mse_base._internal.dcap import ratls
from mse_base._internal.simulation.pki import SimulationQuoteProvider
from mse_base.errors import VerificationError
from mse_base.verify import CertificateChainError, Collateral, Policy, Verifier
from tests.certs import with_extensions

from .conftest import ANY_STATUS, CASES, SHARED, collateral_of, when

CROSS = CASES["gramine_ratls"]["cross_collateral"]
CERT_PEM = (SHARED / "gramine_ratls" / "cert.pem").read_bytes()


def _verifier() -> Verifier:
    return Verifier(collateral=collateral_of(CROSS["collateral_case"]), policy=ANY_STATUS)


def test_gramine_certificate_verifies() -> None:
    result = _verifier().verify_certificate(CERT_PEM, at=when(CROSS["verify_at"]))
    assert result.tcb_status == "OutOfDate"
    assert set(result.advisory_ids) == set(CROSS["expected_advisory_ids"])
    assert result.mrenclave.hex() == CASES["gramine_ratls"]["mrenclave"]
    assert "ratls.key_binding:spki-sha256" in result.checks
    assert result.checks[0] == "ratls.self_signature"
    # The certificate object form gives the same verdict.
    cert = ratls.load_certificate(CERT_PEM)
    assert (
        _verifier().verify_certificate(cert, at=when(CROSS["verify_at"])).tcb_status == "OutOfDate"
    )


def test_gramine_certificate_with_default_policy_is_refused() -> None:
    verifier = Verifier(collateral=collateral_of(CROSS["collateral_case"]))
    with pytest.raises(VerificationError, match="OutOfDate"):
        verifier.verify_certificate(CERT_PEM, at=when(CROSS["verify_at"]))


@pytest.mark.parametrize("at", [item["at"] for item in CASES["gramine_ratls"]["must_fail_at"]])
def test_gramine_certificate_must_fail_at(at: str) -> None:
    with pytest.raises(VerificationError):
        _verifier().verify_certificate(CERT_PEM, at=when(at))


def test_certificate_outside_its_own_validity_is_refused() -> None:
    # 2031: after cert.pem's notAfter (2030-12-31), checked before the quote.
    with pytest.raises(CertificateChainError, match="RA-TLS certificate"):
        _verifier().verify_certificate(CERT_PEM, at=when("2031-06-01T00:00:00Z"))


def test_quote_in_a_certificate_with_another_key_is_refused() -> None:
    # The genuine quote, re-wrapped in a certificate whose key it does not bind.
    quote = (SHARED / "gramine_ratls" / "quote.bin").read_bytes()
    cert = ratls.build_certificate(
        key=ec.generate_private_key(ec.SECP256R1()),
        host="localhost",
        deployment_id=uuid.uuid4(),
        not_before=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        not_after=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        quote=quote,
    )
    with pytest.raises(VerificationError, match="does not bind"):
        _verifier().verify_certificate(cert, at=when(CROSS["verify_at"]))


def test_flipped_certificate_byte_is_rejected() -> None:
    der = ratls.load_certificate(CERT_PEM).public_bytes(Encoding.DER)
    verifier = _verifier()
    at = when(CROSS["verify_at"])
    for offset in range(0, len(der), 5):
        tampered = bytearray(der)
        tampered[offset] ^= 0x01
        with pytest.raises(VerificationError):
            verifier.verify_certificate(bytes(tampered), at=at)


def test_simulated_ratls_certificate(tmp_path_factory: pytest.TempPathFactory) -> None:
    provider = SimulationQuoteProvider(
        mrenclave=bytes(32), mrsigner=bytes(32), directory=tmp_path_factory.mktemp("sim")
    )
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    cert = ratls.build_certificate(
        key=key,
        host="127.0.0.1",
        deployment_id=uuid.uuid4(),
        not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        quote=provider.quote(hashlib.sha256(spki).digest() + bytes(32)),
    )
    verifier = Verifier(
        collateral=Collateral.from_directory(provider.pki.collateral_dir),
        policy=Policy(mrenclave=frozenset({bytes(32)})),
        trust_root=provider.pki.ca_certificate,
        simulation=True,
    )
    result = verifier.verify_certificate(cert.public_bytes(Encoding.PEM))
    assert result.simulation is True
    assert result.tcb_status == "UpToDate"
    assert isinstance(cert, x509.Certificate)


# --- Gramine >= 1.8 certificates: a legacy quote and a TCG DICE quote --------------------------
#
# Built the way Gramine's tools/sgx/ra-tls/ra_tls_attest.c does (create_x509): a P-384 key signed
# with ECDSA-SHA256, the legacy extension with a quote over SHA-256(SPKI DER), and 2.23.133.5.4.9
# with tag 60000 over [second quote, claims], that quote over SHA-256(claims).

MRENCLAVE = b"\x11" * 32
OTHER_MRENCLAVE = b"\x33" * 32


class _NoCollateral:
    """A collateral source that must not be reached: the test fails if it is."""

    def __init__(self) -> None:
        self.calls = 0

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: dt.datetime) -> Collateral:
        self.calls += 1
        raise AssertionError("collateral was requested before the key binding was checked")


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-gramine18")


@pytest.fixture(scope="module")
def provider(sim_dir: Path) -> SimulationQuoteProvider:
    return SimulationQuoteProvider(mrenclave=MRENCLAVE, mrsigner=b"\x22" * 32, directory=sim_dir)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _claims(key: ec.EllipticCurvePrivateKey, **extra: object) -> bytes:
    entry = cbor2.dumps([1, hashlib.sha256(_spki(key)).digest()])
    return cbor2.dumps({"pubkey-hash": entry, **extra})


def _over(data: bytes) -> bytes:
    return hashlib.sha256(data).digest() + bytes(32)


def _evidence(provider: SimulationQuoteProvider, claims: bytes) -> bytes:
    quote = provider.quote(_over(claims))
    return cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, [quote, claims]))


def _sim_verifier(
    provider: SimulationQuoteProvider, collateral: Collateral | _NoCollateral | None = None
) -> Verifier:
    return Verifier(
        collateral=collateral or Collateral.from_directory(provider.pki.collateral_dir),
        trust_root=provider.pki.ca_certificate,
        simulation=True,
    )


def _dual(
    provider: SimulationQuoteProvider,
    key: ec.EllipticCurvePrivateKey,
    legacy_provider: SimulationQuoteProvider | None = None,
) -> list[tuple[str, bytes]]:
    legacy = (legacy_provider or provider).quote(_over(_spki(key)))
    return [
        (ratls.QUOTE_OID_LEGACY, legacy),
        (ratls.TCG_DICE_TAGGED_EVIDENCE_OID, _evidence(provider, _claims(key))),
    ]


def test_gramine_1_8_certificate_with_both_evidences(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> None:
    result = _sim_verifier(provider).verify_certificate(with_extensions(key, _dual(provider, key)))
    assert result.checks[-2:] == (
        "ratls.key_binding:dice-claims",
        "ratls.key_binding:spki-sha256",
    )
    assert result.checks[:2] == ("ratls.self_signature", "ratls.validity")
    # The result is the DICE quote's: its report data is the claims hash.
    assert result.report_data == _over(_claims(key))
    assert result.mrenclave == MRENCLAVE


def test_dice_only_certificate(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> None:
    claims = _claims(key, nonce=b"n" * 16)  # an unknown claim is allowed
    cert = with_extensions(key, [(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, _evidence(provider, claims))])
    result = _sim_verifier(provider).verify_certificate(cert)
    assert result.checks[-1] == "ratls.key_binding:dice-claims"
    assert "ratls.key_binding:spki-sha256" not in result.checks


def _tagged(quote: bytes, claims: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(ratls.TEE_QUOTE_CBOR_TAG, [quote, claims]))


def _bad_dice_cases(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> dict[str, tuple[bytes, str]]:
    claims = _claims(key)
    good_quote = provider.quote(_over(claims))
    other_key_claims = _claims(ec.generate_private_key(ec.SECP384R1()))
    tagged_claims = cbor2.dumps(
        {"pubkey-hash": cbor2.loads(claims)["pubkey-hash"], "x": cbor2.CBORTag(35, "a+")}
    )
    indefinite = b"\xd9\xea\x60\x9f" + cbor2.dumps(good_quote) + cbor2.dumps(claims) + b"\xff"
    tail_quote = provider.quote(hashlib.sha256(claims).digest() + b"\x01" * 32)
    return {
        "claims hash": (_tagged(provider.quote(_over(b"other")), claims), "SHA-256 of its claims"),
        "claims hash tail": (_tagged(tail_quote, claims), "last 32 bytes are not zero"),
        "pubkey-hash": (
            _tagged(provider.quote(_over(other_key_claims)), other_key_claims),
            "does not match the SHA256 of the certificate's public key",
        ),
        "trailing CBOR": (_tagged(good_quote, claims) + b"\x00", "1 trailing bytes"),
        "indefinite length": (indefinite, "indefinite-length"),
        "other tag in claims": (
            _tagged(provider.quote(_over(tagged_claims)), tagged_claims),
            "CBOR tag 35 is not allowed",
        ),
        "outer tag": (
            cbor2.dumps(cbor2.CBORTag(55799, cbor2.CBORTag(60000, [good_quote, claims]))),
            "not CBOR tag 60000",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "claims hash",
        "claims hash tail",
        "pubkey-hash",
        "trailing CBOR",
        "indefinite length",
        "other tag in claims",
        "outer tag",
    ],
)
def test_bad_dice_evidence_is_refused_before_collateral(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey, case: str
) -> None:
    value, message = _bad_dice_cases(provider, key)[case]
    source = _NoCollateral()
    verifier = _sim_verifier(provider, source)
    for extensions in (
        [(ratls.TCG_DICE_TAGGED_EVIDENCE_OID, value)],
        # Next to a good legacy quote too: every evidence must bind on its own.
        [
            (ratls.QUOTE_OID_LEGACY, provider.quote(_over(_spki(key)))),
            (ratls.TCG_DICE_TAGGED_EVIDENCE_OID, value),
        ],
    ):
        with pytest.raises(VerificationError, match=message) as info:
            verifier.verify_certificate(with_extensions(key, extensions))
        assert "\n" not in str(info.value)
    assert source.calls == 0


def test_evidences_disagreeing_on_mrenclave_are_refused(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey, sim_dir: Path
) -> None:
    other = SimulationQuoteProvider(
        mrenclave=OTHER_MRENCLAVE, mrsigner=b"\x22" * 32, directory=sim_dir
    )
    cert = with_extensions(key, _dual(provider, key, legacy_provider=other))
    with pytest.raises(VerificationError, match=f"disagree on the MRENCLAVE \\({MRENCLAVE.hex()}"):
        _sim_verifier(provider).verify_certificate(cert)


def test_critical_quote_extension_is_refused(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = _sim_verifier(provider, _NoCollateral())
    for oid in (ratls.QUOTE_OID_LEGACY, ratls.TCG_DICE_TAGGED_EVIDENCE_OID):
        cert = with_extensions(key, _dual(provider, key), critical=frozenset({oid}))
        with pytest.raises(VerificationError, match=f"{oid} is marked critical"):
            verifier.verify_certificate(cert)


def test_unknown_critical_extension_is_refused(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> None:
    extensions = [*_dual(provider, key), ("1.2.3.4", b"\x05\x00")]
    cert = with_extensions(key, extensions, critical=frozenset({"1.2.3.4"}))
    with pytest.raises(VerificationError, match=r"unrecognised critical extension 1\.2\.3\.4"):
        _sim_verifier(provider, _NoCollateral()).verify_certificate(cert)
    # The same extension, non-critical, is ignored.
    assert _sim_verifier(provider).verify_certificate(with_extensions(key, extensions))


def test_ec_point_binding_needs_a_zero_tail(provider: SimulationQuoteProvider) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    digest = hashlib.sha256(point).digest()
    good = with_extensions(key, [(ratls.QUOTE_OID_LEGACY, provider.quote(digest + bytes(32)))])
    result = _sim_verifier(provider).verify_certificate(good)
    assert result.checks[-1] == "ratls.key_binding:ec-point-sha256"
    tagged = provider.quote(digest + b"app-defined-tag: not a TLS key!!")
    bad = with_extensions(key, [(ratls.QUOTE_OID_LEGACY, tagged)])
    with pytest.raises(VerificationError, match="last 32 bytes are not zero"):
        _sim_verifier(provider, _NoCollateral()).verify_certificate(bad)


def test_key_binding_is_checked_before_collateral(provider: SimulationQuoteProvider) -> None:
    # A genuine quote in a certificate whose key it does not bind: refused without fetching.
    quote = provider.quote(_over(b"some other key"))
    cert = with_extensions(ec.generate_private_key(ec.SECP256R1()), [(ratls.QUOTE_OID, quote)])
    source = _NoCollateral()
    with pytest.raises(VerificationError, match="does not bind"):
        _sim_verifier(provider, source).verify_certificate(cert)
    assert source.calls == 0


def test_only_ecdsa_sha256_or_sha384_self_signatures(
    provider: SimulationQuoteProvider, key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = _sim_verifier(provider, _NoCollateral())
    sha512 = with_extensions(key, _dual(provider, key), hash_algorithm=hashes.SHA512())
    with pytest.raises(VerificationError, match=r"signature algorithm .* is not supported"):
        verifier.verify_certificate(sha512)
    p521 = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(VerificationError, match="key \\(secp521r1\\) is not supported"):
        verifier.verify_certificate(with_extensions(p521, _dual(provider, p521)))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert = with_extensions(rsa_key, [(ratls.QUOTE_OID, b"q" * 200)])
    with pytest.raises(VerificationError, match=r"signature algorithm .* is not supported"):
        verifier.verify_certificate(rsa_cert)
