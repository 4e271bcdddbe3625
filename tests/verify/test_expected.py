"""Every verdict in tests/data/sgx-quotes/expected.json, at the pinned and the must-fail times."""

from __future__ import annotations

import hashlib

import pytest

from mse_base.errors import VerificationError
from mse_base.verify import (
    CertificateChainError,
    CollateralError,
    Policy,
    UnsupportedQuoteError,
    Verifier,
    parse_quote,
)

from .conftest import (
    ANY_STATUS,
    ANY_STATUS_STALE_CRLS,
    CASES,
    SGX_WITH_COLLATERAL,
    collateral_of,
    policy_for,
    quote_of,
    when,
)


@pytest.mark.parametrize("case", SGX_WITH_COLLATERAL)
def test_verdict_at_pinned_time(case: str) -> None:
    exp = CASES[case]
    verifier = Verifier(collateral=collateral_of(case), policy=policy_for(case))
    result = verifier.verify_quote(quote_of(case), at=when(exp["verify_at"]))
    assert result.tcb_status == exp["expected_tcb_status"]
    assert set(result.advisory_ids) == set(exp["expected_advisory_ids"])
    assert len(result.advisory_ids) == len(set(result.advisory_ids))
    assert result.mrenclave.hex() == exp["mrenclave"]
    assert result.mrsigner.hex() == exp["mrsigner"]
    assert result.isv_prod_id == exp["isv_prod_id"]
    assert result.isv_svn == exp["isv_svn"]
    assert result.report_data.hex() == exp["report_data"]
    assert result.fmspc == exp["fmspc"]
    assert result.debug is False
    assert result.simulation is False
    assert result.checks[0] == "quote.format"
    assert result.checks[-1] == "enclave.identity"
    assert hashlib.sha256(result.quote.raw).hexdigest() == exp["quote_sha256"]
    doc = result.to_json()
    assert doc["tcb_status"] == exp["expected_tcb_status"]
    assert doc["mrenclave"] == exp["mrenclave"]


@pytest.mark.parametrize("case", SGX_WITH_COLLATERAL)
def test_default_policy_refuses_non_uptodate(case: str) -> None:
    # None of the real platforms is UpToDate, so the default policy must refuse all of them.
    stale = CASES[case].get("crl_fresh_at_verify_at") is False
    verifier = Verifier(collateral=collateral_of(case), policy=Policy(allow_stale_crls=stale))
    with pytest.raises(VerificationError, match=r"TCB status: .* is not allowed by the policy"):
        verifier.verify_quote(quote_of(case), at=when(CASES[case]["verify_at"]))


@pytest.mark.parametrize(
    ("case", "at"),
    [
        (case, item["at"])
        for case in SGX_WITH_COLLATERAL
        for item in CASES[case]["must_fail_at"] + CASES[case]["oracle_also_rejects_at"]
    ],
)
@pytest.mark.parametrize("policy", [ANY_STATUS, ANY_STATUS_STALE_CRLS], ids=["strict", "stale"])
def test_must_fail_at(case: str, at: str, policy: Policy) -> None:
    verifier = Verifier(collateral=collateral_of(case), policy=policy)
    with pytest.raises(VerificationError):
        verifier.verify_quote(quote_of(case), at=when(at))


@pytest.mark.parametrize(
    "at",
    [
        "2023-06-01T00:00:00Z",
        "2023-07-12T21:00:00Z",
        "2023-07-20T00:00:00Z",
        "2023-08-11T19:00:00Z",
    ],
)
def test_mobilecoin_stale_pck_crl_fails_by_default(at: str) -> None:
    verifier = Verifier(collateral=collateral_of("mobilecoin_sgx_v3"), policy=ANY_STATUS)
    with pytest.raises(VerificationError) as info:
        verifier.verify_quote(quote_of("mobilecoin_sgx_v3"), at=when(at))
    if at != "2023-06-01T00:00:00Z":  # before the leaf's notBefore: the chain fails first
        assert isinstance(info.value, CollateralError)
        assert "PCK CRL: stale" in str(info.value)


def test_mobilecoin_passes_only_with_allow_stale_crls() -> None:
    at = when(CASES["mobilecoin_sgx_v3"]["verify_at"])
    quote, collateral = quote_of("mobilecoin_sgx_v3"), collateral_of("mobilecoin_sgx_v3")
    with pytest.raises(CollateralError, match="allow_stale_crls"):
        Verifier(collateral=collateral, policy=ANY_STATUS).verify_quote(quote, at=at)
    result = Verifier(collateral=collateral, policy=ANY_STATUS_STALE_CRLS).verify_quote(
        quote, at=at
    )
    assert result.tcb_status == "SWHardeningNeeded"


def test_crl_not_yet_valid_fails_even_with_allow_stale_crls() -> None:
    # allow_stale_crls widens only the nextUpdate side of the window.
    verifier = Verifier(collateral=collateral_of("phala_sgx_v3"), policy=ANY_STATUS_STALE_CRLS)
    with pytest.raises(VerificationError):
        verifier.verify_quote(quote_of("phala_sgx_v3"), at=when("2025-06-19T10:00:00Z"))


def test_phala_pck_crl_expiry_boundary() -> None:
    # At 10:20 the QE identity has expired (10:01:18Z): fails whatever the CRL policy.
    verifier = Verifier(collateral=collateral_of("phala_sgx_v3"), policy=ANY_STATUS_STALE_CRLS)
    with pytest.raises(CollateralError, match="QE identity: expired"):
        verifier.verify_quote(quote_of("phala_sgx_v3"), at=when("2025-07-19T10:20:00Z"))


def test_tdx_v4_is_refused_as_unsupported() -> None:
    with pytest.raises(UnsupportedQuoteError, match="TDX quotes are not supported yet"):
        parse_quote(quote_of("phala_tdx_v4"))
    verifier = Verifier(collateral=collateral_of("phala_tdx_v4"), policy=ANY_STATUS)
    with pytest.raises(UnsupportedQuoteError, match="TDX quotes are not supported yet"):
        verifier.verify_quote(quote_of("phala_tdx_v4"), at=when("2025-07-01T00:00:00Z"))


@pytest.mark.parametrize("case", ["cosmian_sgx_v3", "gramine_ratls"])
def test_quotes_without_collateral_parse(case: str) -> None:
    exp = CASES[case]
    quote = parse_quote(quote_of(case))
    body = quote.report_body
    assert body.mr_enclave.hex() == exp["mrenclave"]
    assert body.mr_signer.hex() == exp["mrsigner"]
    assert (body.isv_prod_id, body.isv_svn) == (exp["isv_prod_id"], exp["isv_svn"])
    assert body.report_data.hex() == exp["report_data"]
    assert body.debug is False


@pytest.mark.parametrize(
    ("case", "at"),
    [
        (c, item["at"])
        for c in ("cosmian_sgx_v3", "gramine_ratls")
        for item in CASES[c]["must_fail_at"]
    ],
)
def test_chain_fails_outside_pck_validity(case: str, at: str) -> None:
    # "Whatever collateral is supplied": the PCK leaf is checked before any collateral is used.
    verifier = Verifier(collateral=collateral_of("automata_sgx_v3"), policy=ANY_STATUS_STALE_CRLS)
    with pytest.raises(CertificateChainError, match=r"PCK leaf .* is not valid at"):
        verifier.verify_quote(quote_of(case), at=when(at))


def test_cosmian_with_foreign_collateral_fails_on_fmspc() -> None:
    verifier = Verifier(collateral=collateral_of("automata_sgx_v3"), policy=ANY_STATUS)
    with pytest.raises(CollateralError, match="FMSPC"):
        verifier.verify_quote(quote_of("cosmian_sgx_v3"), at=when("2025-09-01T00:00:00Z"))


def test_gramine_quote_with_automata_collateral() -> None:
    cross = CASES["gramine_ratls"]["cross_collateral"]
    verifier = Verifier(collateral=collateral_of(cross["collateral_case"]), policy=ANY_STATUS)
    result = verifier.verify_quote(quote_of("gramine_ratls"), at=when(cross["verify_at"]))
    assert result.tcb_status == cross["expected_tcb_status"] == "OutOfDate"
    assert set(result.advisory_ids) == set(cross["expected_advisory_ids"])

    only_uptodate = Verifier(collateral=collateral_of(cross["collateral_case"]))
    with pytest.raises(VerificationError, match="OutOfDate"):
        only_uptodate.verify_quote(quote_of("gramine_ratls"), at=when(cross["verify_at"]))
    allow_ood = Verifier(
        collateral=collateral_of(cross["collateral_case"]),
        policy=Policy(allowed_tcb_statuses=frozenset({"OutOfDate"})),
    )
    assert allow_ood.verify_quote(quote_of("gramine_ratls"), at=when(cross["verify_at"]))
