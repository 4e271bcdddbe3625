"""verify_certificate: the real Gramine RA-TLS certificate and RA-TLS certificates built here."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mse_base._internal import ratls
from mse_base._internal.simulation import SimulationQuoteProvider
from mse_base.errors import VerificationError
from mse_base.verify import CertificateChainError, Collateral, Policy, Verifier

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
