"""Cross-check against dcap-qvl 0.7.0 (Phala's Rust verifier), an independent implementation."""

from __future__ import annotations

from datetime import datetime

import dcap_qvl  # in the test extra: a missing install must fail, not skip
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mse_base._internal.dcap.collateral import split_signed_json
from mse_base.errors import VerificationError
from mse_base.verify import Collateral, Verifier, parse_quote

from .conftest import ANY_STATUS, CASES, SGX_WITH_COLLATERAL, collateral_of, quote_of, when


def _dcap_verify(quote: bytes, collateral: Collateral, at: datetime) -> tuple[str, list[str]]:
    chain = x509.load_pem_x509_certificates(parse_quote(quote).pck_chain_pem)
    # The PCK CRL issuer chain is the PCK CA + root from the quote (see the shared README).
    issuer_chain = b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:]).decode()
    tcb_text, tcb_sig = split_signed_json(collateral.tcb_info, "tcbInfo")
    qe_text, qe_sig = split_signed_json(collateral.qe_identity, "enclaveIdentity")
    dcap_collateral = dcap_qvl.QuoteCollateralV3(
        issuer_chain,
        collateral.root_ca_crl,
        collateral.pck_crl,
        collateral.tcb_info_issuer_chain.decode(),
        tcb_text.decode(),
        tcb_sig,
        collateral.qe_identity_issuer_chain.decode(),
        qe_text.decode(),
        qe_sig,
    )
    report = dcap_qvl.verify(quote, dcap_collateral, int(at.timestamp()))
    return report.status, list(report.advisory_ids)


CROSS = [(case, case, CASES[case]["verify_at"]) for case in SGX_WITH_COLLATERAL] + [
    (
        "gramine_ratls",
        CASES["gramine_ratls"]["cross_collateral"]["collateral_case"],
        CASES["gramine_ratls"]["cross_collateral"]["verify_at"],
    )
]
TIMES = [
    (quote_case, coll_case, item["at"])
    for quote_case, coll_case, _ in CROSS
    for item in CASES[coll_case]["must_fail_at"]
] + CROSS


@pytest.mark.parametrize(("quote_case", "collateral_case", "at"), TIMES)
def test_same_verdict_as_dcap_qvl(quote_case: str, collateral_case: str, at: str) -> None:
    quote, collateral, moment = quote_of(quote_case), collateral_of(collateral_case), when(at)
    try:
        theirs: tuple[str, list[str]] | None = _dcap_verify(quote, collateral, moment)
    except ValueError:
        theirs = None
    try:
        result = Verifier(collateral=collateral, policy=ANY_STATUS).verify_quote(quote, at=moment)
        ours: tuple[str, list[str]] | None = (result.tcb_status, list(result.advisory_ids))
    except VerificationError:
        ours = None
    if theirs is None or ours is None:
        # Both enforce CRL freshness, cert and collateral windows: they must reject together.
        assert theirs is None and ours is None, (theirs, ours)
    else:
        assert ours[0] == theirs[0]
        assert set(ours[1]) == set(theirs[1])


def test_cross_check_covers_accepting_cases() -> None:
    accepted = 0
    for quote_case, collateral_case, at in CROSS:
        try:
            _dcap_verify(quote_of(quote_case), collateral_of(collateral_case), when(at))
            accepted += 1
        except ValueError:
            pass
    # phala, automata and gramine+automata are accepted by dcap-qvl (mobilecoin: stale CRL).
    assert accepted == 3
