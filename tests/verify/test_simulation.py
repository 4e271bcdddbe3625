"""Quotes from the product's simulation backend: accepted only with the simulation CA."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap.pccs import PCCSCollateralSource
from mse_base._internal.simulation.pki import SimulationQuoteProvider
from mse_base.errors import Error, UsageError, VerificationError
from mse_base.verify import (
    CertificateChainError,
    Collateral,
    Policy,
    PolicyError,
    RevokedCertificateError,
    Verifier,
)
from tests.certs import bad_trust_roots
from tests.shared_data import SHARED_QUOTES

MRENCLAVE = bytes(range(32))
MRSIGNER = bytes(range(32, 64))
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> SimulationQuoteProvider:
    return SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=MRSIGNER,
        isv_prod_id=3,
        isv_svn=5,
        directory=tmp_path_factory.mktemp("sim"),
    )


def _collateral(provider: SimulationQuoteProvider) -> Collateral:
    return Collateral.from_directory(provider.pki.collateral_dir)


def _sim_verifier(provider: SimulationQuoteProvider, policy: Policy | None = None) -> Verifier:
    return Verifier(
        collateral=_collateral(provider),
        policy=policy or Policy(),
        trust_root=provider.pki.ca_certificate,
        simulation=True,
    )


def test_simulation_quote_verifies_with_the_simulation_ca(
    provider: SimulationQuoteProvider,
) -> None:
    result = _sim_verifier(
        provider, Policy(mrenclave=frozenset({MRENCLAVE}), mrsigner=MRSIGNER, isv_prod_id=3)
    ).verify_quote(provider.quote(REPORT_DATA))
    assert result.simulation is True
    assert result.tcb_status == "UpToDate"
    assert (result.mrenclave, result.mrsigner, result.report_data) == (
        MRENCLAVE,
        MRSIGNER,
        REPORT_DATA,
    )
    assert (result.isv_prod_id, result.isv_svn) == (3, 5)
    assert result.to_json()["simulation"] is True


def test_simulation_quote_is_refused_by_the_intel_root(provider: SimulationQuoteProvider) -> None:
    with pytest.raises(CertificateChainError, match="Intel SGX Root CA") as refused:
        Verifier(collateral=_collateral(provider)).verify_quote(provider.quote(REPORT_DATA))
    # The message says where the chain ends, so the reader knows which verifier it was for.
    assert str(refused.value) == (
        "PCK chain (Intel SGX Root CA): does not end at the trusted root: it ends at "
        "'MSE SIMULATION — NOT SGX Root CA', an mse-base simulation CA, which only a verifier "
        "told to trust it accepts"
    )
    assert refused.value.failed_check == "pck.chain"


def test_another_simulation_ca_is_named_as_such(
    provider: SimulationQuoteProvider, tmp_path: Path
) -> None:
    other = SimulationQuoteProvider(mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=tmp_path)
    with pytest.raises(CertificateChainError) as refused:
        _sim_verifier(other).verify_quote(provider.quote(REPORT_DATA))
    assert str(refused.value).endswith(
        "it ends at 'MSE SIMULATION — NOT SGX Root CA', another mse-base simulation CA than the "
        "trusted one"
    )


def _direct_provider(provider: SimulationQuoteProvider) -> SimulationQuoteProvider:
    """The quote source mse-run --direct hands its enclave: a fresh attestation key, certified
    by the PKI as quoting the real measurement."""
    qe = provider.pki.quoting_enclave(
        ec.generate_private_key(ec.SECP256R1()), real_measurement=True
    )
    return SimulationQuoteProvider(mrenclave=MRENCLAVE, mrsigner=MRSIGNER, quoting_enclave=qe)


def test_measurement_is_simulated_unless_the_pki_certified_the_real_one(
    provider: SimulationQuoteProvider,
) -> None:
    simulated = _sim_verifier(provider).verify_quote(provider.quote(REPORT_DATA))
    assert (simulated.simulation, simulated.measurement) == (True, "simulated")
    assert simulated.to_json()["measurement"] == "simulated"
    direct = _sim_verifier(provider).verify_quote(_direct_provider(provider).quote(REPORT_DATA))
    assert (direct.simulation, direct.measurement) == (True, "real")
    assert direct.to_json()["measurement"] == "real"


def test_the_real_measurement_mark_is_bound_by_the_pck_key(
    provider: SimulationQuoteProvider,
) -> None:
    """A holder of the attestation key (the enclave) cannot claim the real measurement: the QE
    authentication data is bound by the QE report, which only the PCK key signs."""
    from mse_base._internal.dcap.quote import DIRECT_MEASUREMENT_MARK
    from mse_base._internal.simulation.pki import QE_AUTH_DATA

    quote = provider.quote(REPORT_DATA)
    # Header, report body, signature data length, then the quote signature, the attestation
    # key, the QE report and its signature, the auth data's size: the auth data.
    start = 48 + 384 + 4 + 64 + 64 + 384 + 64 + 2
    assert quote[start : start + 32] == QE_AUTH_DATA and len(DIRECT_MEASUREMENT_MARK) == 32
    claimed = quote[:start] + DIRECT_MEASUREMENT_MARK + quote[start + 32 :]
    with pytest.raises(VerificationError) as refused:
        _sim_verifier(provider).verify_quote(claimed)
    assert refused.value.failed_check == "qe_report.binding"
    assert refused.value.partial is not None and refused.value.partial.measurement is None


def test_a_rejection_shows_the_measurement_with_the_identity(
    provider: SimulationQuoteProvider,
) -> None:
    quote = _direct_provider(provider).quote(REPORT_DATA)
    with pytest.raises(PolicyError) as refused:
        _sim_verifier(provider, Policy(mrenclave=frozenset({bytes(32)}))).verify_quote(quote)
    partial = refused.value.partial
    assert partial is not None
    assert (partial.mrenclave, partial.measurement) == (MRENCLAVE, "real")


def test_foreign_root_needs_simulation_flag(provider: SimulationQuoteProvider) -> None:
    with pytest.raises(UsageError, match="simulation=True"):
        Verifier(collateral=_collateral(provider), trust_root=provider.pki.ca_certificate)
    with pytest.raises(UsageError, match="trust_root"):
        Verifier(collateral=_collateral(provider), simulation=True)


# What check_trust_root says for each kind of bad root (tests/certs.py builds them).
BAD_ROOT_REASONS = {
    "not a CA": "not a CA certificate (no basicConstraints CA:TRUE)",
    "RSA": "its key is RSA-2048, not ECDSA P-256",
    "P-384": "its key is ECDSA secp384r1, not ECDSA P-256",
    "not self-signed": "not self-signed",
}


@pytest.mark.parametrize("kind", sorted(BAD_ROOT_REASONS))
def test_a_bad_simulation_root_is_one_usage_error(
    provider: SimulationQuoteProvider, kind: str
) -> None:
    """Every kind of bad root is bad input (UsageError, exit 2), never a rejected quote: the
    constructor refuses it before any quote is looked at."""
    root = bad_trust_roots()[kind]
    with pytest.raises(Error) as caught:
        Verifier(collateral=_collateral(provider), trust_root=root, simulation=True)
    assert type(caught.value) is UsageError
    assert str(caught.value) == f"trust root (bad root): {BAD_ROOT_REASONS[kind]}"
    # Without simulation=True too (it is checked before the flag is).
    with pytest.raises(UsageError, match="trust root"):
        Verifier(collateral=_collateral(provider), trust_root=root)
    # A collateral source keyed by that root refuses it the same way.
    with pytest.raises(UsageError, match="trust root"):
        PCCSCollateralSource("https://pccs.invalid", trust_root=root, use_cache=False)


def test_intel_root_with_simulation_flag_is_refused(provider: SimulationQuoteProvider) -> None:
    intel = x509.load_der_x509_certificate((SHARED_QUOTES / "intel_sgx_root_ca.der").read_bytes())
    with pytest.raises(UsageError, match="labelled as simulated"):
        Verifier(collateral=_collateral(provider), trust_root=intel, simulation=True)
    # The same root passed explicitly without the flag is fine.
    Verifier(collateral=_collateral(provider), trust_root=intel)


def test_min_isv_svn(provider: SimulationQuoteProvider) -> None:
    quote = provider.quote(REPORT_DATA)
    assert _sim_verifier(provider, Policy(min_isv_svn=5)).verify_quote(quote)
    with pytest.raises(PolicyError, match="ISV SVN 5 is below the minimum 6"):
        _sim_verifier(provider, Policy(min_isv_svn=6)).verify_quote(quote)


def test_debug_enclave_is_refused_unless_allowed(provider: SimulationQuoteProvider) -> None:
    debug = SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=MRSIGNER,
        debug=True,
        directory=provider.pki.collateral_dir.parent,
    )
    quote = debug.quote(REPORT_DATA)
    with pytest.raises(PolicyError, match="DEBUG"):
        _sim_verifier(provider).verify_quote(quote)
    result = _sim_verifier(provider, Policy(allow_debug=True)).verify_quote(quote)
    assert result.debug is True


def _revoking_crl(issuer_cert: x509.Certificate, key_path: Path, serial: int) -> bytes:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.timezone.utc)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(now - dt.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_revoked_certificates_are_refused(provider: SimulationQuoteProvider) -> None:
    pki_dir = provider.pki.collateral_dir.parent
    quote = provider.quote(REPORT_DATA)
    chain = x509.load_pem_x509_certificates(provider.pki.pck_chain_pem)
    leaf, pck_ca, root = chain
    tcb_signer = x509.load_pem_x509_certificates(_collateral(provider).tcb_info_issuer_chain)[0]
    base = _collateral(provider)
    cases = {
        "PCK leaf": dataclasses.replace(
            base, pck_crl=_revoking_crl(pck_ca, pki_dir / "pck_ca.key", leaf.serial_number)
        ),
        "PCK CA": dataclasses.replace(
            base, root_ca_crl=_revoking_crl(root, pki_dir / "ca.key", pck_ca.serial_number)
        ),
        "TCB signing": dataclasses.replace(
            base, root_ca_crl=_revoking_crl(root, pki_dir / "ca.key", tcb_signer.serial_number)
        ),
    }
    for what, collateral in cases.items():
        verifier = Verifier(
            collateral=collateral, trust_root=provider.pki.ca_certificate, simulation=True
        )
        with pytest.raises(RevokedCertificateError, match=what):
            verifier.verify_quote(quote)
    # A CRL that revokes some other serial does not affect the quote.
    other = dataclasses.replace(
        base, pck_crl=_revoking_crl(pck_ca, pki_dir / "pck_ca.key", leaf.serial_number + 1)
    )
    Verifier(
        collateral=other, trust_root=provider.pki.ca_certificate, simulation=True
    ).verify_quote(quote)


def test_naive_time_is_refused(provider: SimulationQuoteProvider) -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        _sim_verifier(provider).verify_quote(
            provider.quote(REPORT_DATA),
            at=dt.datetime(2025, 1, 1),
        )


class _Source:
    """A CollateralSource that records what it was asked for."""

    def __init__(self, collateral: Collateral) -> None:
        self.collateral = collateral
        self.asked: list[tuple[str, str]] = []

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: dt.datetime) -> Collateral:
        self.asked.append((fmspc, pck_ca))
        return self.collateral


def test_collateral_source_is_asked_for_the_quote_platform(
    provider: SimulationQuoteProvider,
) -> None:
    source = _Source(_collateral(provider))
    verifier = Verifier(collateral=source, trust_root=provider.pki.ca_certificate, simulation=True)
    verifier.verify_quote(provider.quote(REPORT_DATA))
    assert source.asked == [("4d534553494d", "processor")]


def test_source_returning_garbage_fails_closed(provider: SimulationQuoteProvider) -> None:
    source = _Source("not collateral")  # type: ignore[arg-type]
    verifier = Verifier(collateral=source, trust_root=provider.pki.ca_certificate, simulation=True)
    with pytest.raises(VerificationError, match="not Collateral"):
        verifier.verify_quote(provider.quote(REPORT_DATA))
