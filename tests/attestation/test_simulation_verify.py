"""Simulation quotes go through the real verifier, and only with the simulation CA."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import ratls
from mse_base._internal.simulation.pki import SimulationPKI, SimulationQuoteProvider
from mse_base.errors import UsageError, VerificationError
from mse_base.verify import Collateral, Policy, Verifier

MRENCLAVE = hashlib.sha256(b"app").digest()
MRSIGNER = hashlib.sha256(b"signer").digest()


def _verifier(pki: SimulationPKI, policy: Policy | None = None) -> Verifier:
    return Verifier(
        collateral=Collateral.from_directory(pki.collateral_dir),
        policy=policy or Policy(mrenclave=frozenset({MRENCLAVE}), mrsigner=MRSIGNER),
        trust_root=pki.ca_certificate,
        simulation=True,
    )


def _provider(pki: SimulationPKI, **kwargs: object) -> SimulationQuoteProvider:
    return SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=MRSIGNER,
        directory=pki.directory,
        **kwargs,  # type: ignore[arg-type]
    )


def test_simulation_quote_verifies_with_simulation_ca(sim_pki: SimulationPKI) -> None:
    report_data = hashlib.sha512(b"hello").digest()
    quote = _provider(sim_pki, isv_prod_id=2, isv_svn=5).quote(report_data)
    result = _verifier(sim_pki).verify_quote(quote)
    assert result.simulation is True
    assert result.mrenclave == MRENCLAVE and result.mrsigner == MRSIGNER
    assert (result.isv_prod_id, result.isv_svn) == (2, 5)
    assert result.report_data == report_data
    assert result.tcb_status == "UpToDate" and tuple(result.advisory_ids) == ()
    assert result.debug is False


def test_simulation_quote_refused_without_simulation_ca(sim_pki: SimulationPKI) -> None:
    quote = _provider(sim_pki).quote(bytes(64))
    collateral = Collateral.from_directory(sim_pki.collateral_dir)
    # The default trust root is Intel's: the simulation chain does not end there.
    with pytest.raises(VerificationError, match="root"):
        Verifier(collateral=collateral, policy=Policy()).verify_quote(quote)
    # A non-Intel root is accepted only when the caller says "simulation".
    with pytest.raises(UsageError):
        Verifier(collateral=collateral, policy=Policy(), trust_root=sim_pki.ca_certificate)


def test_simulation_policy_still_applies(sim_pki: SimulationPKI) -> None:
    debug_quote = _provider(sim_pki, debug=True).quote(bytes(64))
    with pytest.raises(VerificationError, match=r"(?i)debug"):
        _verifier(sim_pki).verify_quote(debug_quote)
    other = Policy(mrenclave=frozenset({bytes(32)}))
    with pytest.raises(VerificationError, match=r"(?i)mrenclave"):
        _verifier(sim_pki, other).verify_quote(_provider(sim_pki).quote(bytes(64)))


def test_tampered_simulation_quote_rejected(sim_pki: SimulationPKI) -> None:
    quote = bytearray(_provider(sim_pki).quote(bytes(64)))
    quote[48 + 64] ^= 1  # MRENCLAVE
    with pytest.raises(VerificationError):
        _verifier(sim_pki).verify_quote(bytes(quote))


def test_simulation_ratls_certificate_verifies(sim_pki: SimulationPKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    quote = _provider(sim_pki).quote(ratls.report_data_for_key(key.public_key()))
    cert = ratls.build_certificate(
        key=key,
        host="localhost",
        deployment_id=uuid.uuid4(),
        not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        quote=quote,
    )
    result = _verifier(sim_pki).verify_certificate(cert)
    assert result.simulation is True
    assert "ratls.key_binding:spki-sha256" in result.checks
    # The same quote in a certificate for another key must not verify.
    other = ec.generate_private_key(ec.SECP256R1())
    forged = ratls.build_certificate(
        key=other,
        host="localhost",
        deployment_id=uuid.uuid4(),
        not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        quote=quote,
    )
    with pytest.raises(VerificationError, match="bind"):
        _verifier(sim_pki).verify_certificate(forged)
