"""A rejection a program can read: the real quotes give the right ``failed_check`` and exactly
the fields established before it (``VerificationError.partial``), with messages unchanged."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mse_base._internal.dcap import ratls
from mse_base._internal.dcap.pccs import PCCSCollateralSource
from mse_base._internal.simulation.pki import SimulationQuoteProvider
from mse_base.errors import FAILED_CHECKS, VerificationError
from mse_base.verify import (
    Collateral,
    CollateralError,
    PartialResult,
    Policy,
    PolicyError,
    TcbStatusError,
    Verifier,
)
from tests.net import free_port
from tests.pins import QUOTE_CHECKS

from .conftest import (
    ANY_STATUS,
    CASES,
    SGX_WITH_COLLATERAL,
    SHARED,
    collateral_of,
    quote_of,
    when,
)
from .test_tampering import _regions


def _upto(last: str) -> tuple[str, ...]:
    return QUOTE_CHECKS[: QUOTE_CHECKS.index(last) + 1]


def _reject(verifier: Verifier, quote: bytes, at: dt.datetime | None) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        verifier.verify_quote(quote, at=at)
    err = caught.value
    assert err.failed_check in FAILED_CHECKS
    assert isinstance(err.partial, PartialResult)
    return err


def _assert_identity(partial: PartialResult, case: str) -> None:
    want = CASES[case]
    assert partial.mrenclave is not None and partial.mrenclave.hex() == want["mrenclave"]
    assert partial.mrsigner is not None and partial.mrsigner.hex() == want["mrsigner"]
    assert (partial.isv_prod_id, partial.isv_svn) == (want["isv_prod_id"], want["isv_svn"])
    assert partial.report_data is not None and partial.report_data.hex() == want["report_data"]
    assert partial.debug is False
    assert partial.fmspc == want["fmspc"]
    assert partial.simulation is False


def _assert_no_identity(partial: PartialResult) -> None:
    identity = (partial.mrenclave, partial.mrsigner, partial.isv_prod_id, partial.isv_svn)
    assert identity == (None, None, None, None)
    assert (partial.report_data, partial.debug) == (None, None)
    assert (partial.tcb_status, partial.advisory_ids) == (None, None)
    doc = partial.to_json()
    assert [doc[k] for k in ("mrenclave", "mrsigner", "report_data", "debug")] == [None] * 4


def _assert_signed_but_not_established(partial: PartialResult, case: str) -> None:
    """The quote signature verified, but the key that made it is not yet trusted (PCK
    revocation and QE identity unchecked): the report body is still anyone's claim."""
    assert "quote.signature" in partial.checks and "qe.identity" not in partial.checks
    _assert_no_identity(partial)
    assert partial.fmspc == CASES[case]["fmspc"]  # from the PCK chain, which did verify


# --- policy: genuine, but not what the policy allows ------------------------------------------


@pytest.mark.parametrize("case", SGX_WITH_COLLATERAL)
def test_default_policy_reports_the_tcb_status_it_refused(case: str) -> None:
    want = CASES[case]
    stale = want.get("crl_fresh_at_verify_at") is False
    verifier = Verifier(collateral=collateral_of(case), policy=Policy(allow_stale_crls=stale))
    err = _reject(verifier, quote_of(case), when(want["verify_at"]))
    assert isinstance(err, TcbStatusError)
    # The message is the one it always was.
    assert str(err).startswith(f"TCB status: {want['expected_tcb_status']} (advisories: ")
    assert str(err).endswith("is not allowed by the policy (allowed: UpToDate)")
    assert err.failed_check == "policy.tcb_status"
    partial = err.partial
    assert partial is not None
    assert partial.tcb_status == want["expected_tcb_status"]
    assert partial.advisory_ids is not None
    assert set(partial.advisory_ids) == set(want["expected_advisory_ids"])
    _assert_identity(partial, case)
    assert partial.checks == _upto("qe.identity")
    assert partial.quote is not None
    assert hashlib.sha256(partial.quote.raw).hexdigest() == want["quote_sha256"]


def test_phala_with_the_default_policy_as_json() -> None:
    want = CASES["phala_sgx_v3"]
    err = _reject(
        Verifier(collateral=collateral_of("phala_sgx_v3")),
        quote_of("phala_sgx_v3"),
        when(want["verify_at"]),
    )
    assert err.partial is not None
    doc = json.loads(json.dumps(err.partial.to_json()))
    assert doc == {
        "mrenclave": "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
        "mrsigner": want["mrsigner"],
        "isv_prod_id": 0,
        "isv_svn": 0,
        "report_data": want["report_data"],
        "debug": False,
        "tcb_status": "ConfigurationAndSWHardeningNeeded",
        "advisory_ids": ["INTEL-SA-00289", "INTEL-SA-00615"],
        "simulation": False,
        "measurement": "real",
        "fmspc": "00a067110000",
        "checks": list(_upto("qe.identity")),
        "quote_sha256": want["quote_sha256"],
    }
    # The verified form is the same serialiser: same keys, same order.
    lenient = Verifier(collateral=collateral_of("phala_sgx_v3"), policy=ANY_STATUS)
    result = lenient.verify_quote(quote_of("phala_sgx_v3"), at=when(want["verify_at"]))
    assert list(result.to_json()) == list(doc)
    assert result.to_json() == {**doc, "checks": list(QUOTE_CHECKS)}


@pytest.mark.parametrize(
    ("policy", "failed_check", "message"),
    [
        (Policy(mrenclave=frozenset({bytes(32)})), "policy.mrenclave", "MRENCLAVE 33d8736d"),
        (Policy(mrsigner=bytes(32)), "policy.mrsigner", "MRSIGNER 815f42f1"),
        (Policy(isv_prod_id=7), "policy.isv_prod_id", "ISV product ID 0 is not the expected 7"),
        (Policy(min_isv_svn=1), "policy.isv_svn", "ISV SVN 0 is below the minimum 1"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("policy.") else "",
)
def test_identity_mismatch_reports_the_real_identity(
    policy: Policy, failed_check: str, message: str
) -> None:
    case = "phala_sgx_v3"
    policy = dataclasses.replace(policy, allowed_tcb_statuses=ANY_STATUS.allowed_tcb_statuses)
    verifier = Verifier(collateral=collateral_of(case), policy=policy)
    err = _reject(verifier, quote_of(case), when(CASES[case]["verify_at"]))
    assert isinstance(err, PolicyError)
    assert message in str(err)
    assert err.failed_check == failed_check
    assert err.partial is not None
    _assert_identity(err.partial, case)
    assert err.partial.tcb_status == CASES[case]["expected_tcb_status"]
    assert err.partial.checks == _upto("tcb.status")


# --- collateral and time ------------------------------------------------------------------------

# What each must-fail time of expected.json fails first, in the verifier's order (PCK chain
# validity, then TCB signing certificate, TCB info, QE identity, CRL windows). The reasons in
# expected.json say which item is out of its window at each time.
MUST_FAIL = {
    ("phala_sgx_v3", "2023-09-01T00:00:00Z"): "pck.chain.not_yet_valid",
    ("phala_sgx_v3", "2025-07-19T10:10:00Z"): "collateral.qe_identity.expired",
    ("phala_sgx_v3", "2025-07-19T10:30:00Z"): "collateral.qe_identity.expired",
    ("phala_sgx_v3", "2025-07-19T11:00:00Z"): "collateral.tcb_info.expired",
    ("phala_sgx_v3", "2026-11-26T00:00:00Z"): "collateral.tcb_info.expired",
    ("phala_sgx_v3", "2025-06-19T10:30:00Z"): "collateral.tcb_info.not_yet_valid",
    ("automata_sgx_v3", "2024-03-01T00:00:00Z"): "pck.chain.not_yet_valid",
    ("automata_sgx_v3", "2025-09-14T05:00:00Z"): "collateral.qe_identity.expired",
    ("automata_sgx_v3", "2025-09-14T05:30:00Z"): "collateral.tcb_info.expired",
    ("automata_sgx_v3", "2025-09-15T00:00:00Z"): "collateral.tcb_info.expired",
    ("automata_sgx_v3", "2026-11-26T00:00:00Z"): "collateral.tcb_info.expired",
    ("automata_sgx_v3", "2025-08-15T05:00:00Z"): "collateral.tcb_info.not_yet_valid",
    ("mobilecoin_sgx_v3", "2023-05-15T00:00:00Z"): "pck.chain.not_yet_valid",
    ("mobilecoin_sgx_v3", "2023-06-01T00:00:00Z"): "pck.chain.not_yet_valid",
    ("mobilecoin_sgx_v3", "2023-08-12T00:00:00Z"): "collateral.tcb_info.expired",
    ("mobilecoin_sgx_v3", "2025-06-01T00:00:00Z"): "collateral.signing_chain.expired",
    ("mobilecoin_sgx_v3", "2026-11-26T00:00:00Z"): "collateral.signing_chain.expired",
    ("mobilecoin_sgx_v3", "2023-07-12T20:00:00Z"): "collateral.qe_identity.not_yet_valid",
}


def test_the_must_fail_table_covers_expected_json() -> None:
    times = {
        (case, item["at"])
        for case in SGX_WITH_COLLATERAL
        for item in CASES[case]["must_fail_at"] + CASES[case]["oracle_also_rejects_at"]
    }
    assert times == set(MUST_FAIL)


@pytest.mark.parametrize(("case", "at"), sorted(MUST_FAIL))
def test_must_fail_times_give_the_expiry_codes(case: str, at: str) -> None:
    err = _reject(
        Verifier(collateral=collateral_of(case), policy=ANY_STATUS), quote_of(case), when(at)
    )
    code = MUST_FAIL[(case, at)]
    assert err.failed_check == code
    assert err.partial is not None
    if code.startswith("pck.chain."):
        # The PCK chain is out of its window: nothing about the quote is established.
        assert isinstance(err.partial, PartialResult)
        assert err.partial.checks == ("quote.format",)
        assert err.partial.fmspc is None
        _assert_no_identity(err.partial)
    else:
        assert isinstance(err, CollateralError)
        # The collateral is out of date, so revocation and the QE identity could not be
        # checked: the key that signed the quote is not trusted, nor what it signed.
        assert err.partial.checks == _upto("collateral.platform")
        _assert_signed_but_not_established(err.partial, case)


def test_stale_pck_crl_is_its_own_code() -> None:
    case = "mobilecoin_sgx_v3"
    verifier = Verifier(collateral=collateral_of(case), policy=ANY_STATUS)
    err = _reject(verifier, quote_of(case), when(CASES[case]["verify_at"]))
    assert err.failed_check == "collateral.pck_crl.expired"
    assert "stale" in str(err)


def test_collateral_of_another_platform() -> None:
    # Phala's collateral with automata's TCB info: all signed by Intel, for another FMSPC.
    collateral = dataclasses.replace(
        collateral_of("phala_sgx_v3"), tcb_info=collateral_of("automata_sgx_v3").tcb_info
    )
    err = _reject(
        Verifier(collateral=collateral, policy=ANY_STATUS),
        quote_of("phala_sgx_v3"),
        when(CASES["phala_sgx_v3"]["verify_at"]),
    )
    assert err.failed_check == "collateral.platform"
    assert err.partial is not None
    assert err.partial.checks == _upto("collateral.crl_signatures")


def _replace_hex_digit(data: bytes, offset: int) -> bytes:
    digit = data[offset : offset + 1]
    return data[:offset] + (b"1" if digit != b"1" else b"2") + data[offset + 1 :]


@pytest.mark.parametrize(
    ("field", "tamper", "failed_check"),
    [
        # The last hex digit of the signature: still well-formed, no longer valid.
        ("tcb_info", lambda d: _replace_hex_digit(d, len(d) - 3), "collateral.tcb_info.signature"),
        (
            "tcb_info",
            lambda d: d.replace(b'"version":3', b'"version":4'),
            "collateral.tcb_info.signature",
        ),
        ("tcb_info", lambda d: b" " + d, "collateral.tcb_info.format"),
        (
            "qe_identity",
            lambda d: _replace_hex_digit(d, len(d) - 3),
            "collateral.qe_identity.signature",
        ),
        ("qe_identity", lambda d: d[:-2], "collateral.qe_identity.format"),
        ("tcb_info_issuer_chain", lambda d: d[:-30], "collateral.signing_chain"),
        ("pck_crl", lambda d: b"not a CRL", "collateral.pck_crl.format"),
        ("pck_crl", lambda d: d[:-1] + bytes([d[-1] ^ 1]), "collateral.pck_crl.signature"),
        ("root_ca_crl", lambda d: b"not a CRL", "collateral.root_ca_crl.format"),
        (
            "root_ca_crl",
            lambda d: d[:-1] + bytes([d[-1] ^ 1]),
            "collateral.root_ca_crl.signature",
        ),
    ],
)
def test_tampered_collateral_names_the_document(
    field: str, tamper: Callable[[bytes], bytes], failed_check: str
) -> None:
    case = "automata_sgx_v3"
    original = collateral_of(case)
    tampered = tamper(getattr(original, field))
    assert tampered != getattr(original, field)
    collateral = dataclasses.replace(original, **{field: tampered})
    if field == "tcb_info_issuer_chain":
        collateral = dataclasses.replace(collateral, qe_identity_issuer_chain=tampered)
    err = _reject(
        Verifier(collateral=collateral, policy=ANY_STATUS),
        quote_of(case),
        when(CASES[case]["verify_at"]),
    )
    assert err.failed_check == failed_check, str(err)
    assert err.partial is not None
    assert err.partial.checks[-1] in ("quote.signature", "collateral.signatures")
    _assert_signed_but_not_established(err.partial, case)


def test_unreachable_collateral_service() -> None:
    source = PCCSCollateralSource(f"http://127.0.0.1:{free_port()}", use_cache=False, timeout=5)
    case = "automata_sgx_v3"
    err = _reject(
        Verifier(collateral=source, policy=ANY_STATUS),
        quote_of(case),
        when(CASES[case]["verify_at"]),
    )
    assert err.failed_check == "collateral.unavailable"
    assert err.partial is not None
    assert err.partial.checks == _upto("quote.signature")
    _assert_signed_but_not_established(err.partial, case)


# --- the quote ---------------------------------------------------------------------------------

# What a flipped bit in each region of a real quote fails (every bit 0 of the region).
REGION_CHECKS = {
    "header": {"quote.unsupported", "quote.signature"},
    "report body": {"quote.signature"},
    "signature data length": {"quote.format"},
    "quote signature": {"quote.signature"},
    "attestation key": {"qe_report.binding"},
    "QE report": {"qe_report.signature"},
    "QE report signature": {"qe_report.signature"},
    "QE auth data size": {"quote.format"},
    "QE auth data": {"qe_report.binding"},
    "certification data type and size": {"quote.unsupported", "quote.format"},
    "certification data (PCK chain)": {"pck.chain"},
}
PASSED_BEFORE = {
    "quote.format": (),
    "quote.unsupported": (),
    "pck.chain": ("quote.format",),
    "qe_report.signature": _upto("pck.chain"),
    "qe_report.binding": _upto("qe_report.signature"),
    "quote.signature": _upto("qe_report.binding"),
}


def test_every_tampered_quote_region_gives_its_code() -> None:
    case = "automata_sgx_v3"
    quote = quote_of(case)
    verifier = Verifier(collateral=collateral_of(case), policy=ANY_STATUS)
    at = when(CASES[case]["verify_at"])
    assert set(REGION_CHECKS) == set(_regions(quote))
    for region, span in _regions(quote).items():
        seen = set()
        for offset in span:
            tampered = bytearray(quote)
            tampered[offset] ^= 0x01
            err = _reject(verifier, bytes(tampered), at)
            assert err.failed_check is not None and err.partial is not None
            seen.add(err.failed_check)
            assert err.partial.checks == PASSED_BEFORE[err.failed_check], (region, offset)
            # Before the quote signature verified, no identity is reported as established.
            _assert_no_identity(err.partial)
            if err.failed_check in ("quote.format", "quote.unsupported", "pck.chain"):
                assert err.partial.fmspc is None
            else:
                assert err.partial.fmspc == CASES[case]["fmspc"]
        assert seen == REGION_CHECKS[region], region


def test_tampered_mrenclave_is_a_signature_failure_without_identity() -> None:
    case = "phala_sgx_v3"
    tampered = bytearray(quote_of(case))
    tampered[48 + 64] ^= 0xFF  # the first byte of MRENCLAVE in the report body
    err = _reject(
        Verifier(collateral=collateral_of(case), policy=ANY_STATUS),
        bytes(tampered),
        when(CASES[case]["verify_at"]),
    )
    assert err.failed_check == "quote.signature"
    assert str(err).startswith("quote signature: does not verify")
    assert err.partial is not None
    _assert_no_identity(err.partial)
    # The parsed quote is there for diagnostics, with the tampered measurement.
    assert err.partial.quote is not None
    assert err.partial.quote.report_body.mr_enclave.hex() != CASES[case]["mrenclave"]


def test_tdx_and_garbage_quotes() -> None:
    verifier = Verifier(collateral=collateral_of("automata_sgx_v3"), policy=ANY_STATUS)
    err = _reject(verifier, quote_of("phala_tdx_v4"), None)
    assert err.failed_check == "quote.unsupported"
    assert err.partial == PartialResult()
    err = _reject(verifier, b"\x03\x00\x02\x00" + bytes(20), None)
    assert err.failed_check == "quote.format"
    assert err.partial == PartialResult()


def test_random_mutations_always_name_a_check() -> None:
    case = "automata_sgx_v3"
    verifier = Verifier(collateral=collateral_of(case), policy=ANY_STATUS)
    at = when(CASES[case]["verify_at"])
    base = quote_of(case)
    rng = random.Random(20261130)
    for _ in range(500):
        data = bytearray(base)
        pos = rng.randrange(len(data))
        data[pos : pos + rng.randint(0, 3)] = rng.randbytes(rng.randint(0, 3))
        if bytes(data) == base:
            continue
        err = _reject(verifier, bytes(data), at)
        assert err.partial is not None
        assert set(err.partial.checks) <= set(QUOTE_CHECKS)
        if err.partial.mrenclave is not None:
            assert "qe.identity" in err.partial.checks


# --- RA-TLS certificates ------------------------------------------------------------------------

CROSS = CASES["gramine_ratls"]["cross_collateral"]
CERT_PEM = (SHARED / "gramine_ratls" / "cert.pem").read_bytes()
RATLS_PASSED = ("ratls.self_signature", "ratls.validity")


def _ratls_reject(cert: bytes, policy: Policy, at: dt.datetime) -> VerificationError:
    verifier = Verifier(collateral=collateral_of(CROSS["collateral_case"]), policy=policy)
    with pytest.raises(VerificationError) as caught:
        verifier.verify_certificate(cert, at=at)
    assert caught.value.failed_check in FAILED_CHECKS
    assert isinstance(caught.value.partial, PartialResult)
    return caught.value


def test_gramine_certificate_with_the_default_policy() -> None:
    err = _ratls_reject(CERT_PEM, Policy(), when(CROSS["verify_at"]))
    assert err.failed_check == "policy.tcb_status"
    assert err.partial is not None
    assert err.partial.tcb_status == "OutOfDate"
    assert err.partial.advisory_ids is not None
    assert set(err.partial.advisory_ids) == set(CROSS["expected_advisory_ids"])
    assert err.partial.mrenclave is not None
    assert err.partial.mrenclave.hex() == CASES["gramine_ratls"]["mrenclave"]
    assert err.partial.checks == (
        *RATLS_PASSED,
        *_upto("qe.identity"),
        "ratls.key_binding:spki-sha256",
    )


def test_gramine_certificate_with_a_wrong_mrenclave() -> None:
    policy = dataclasses.replace(ANY_STATUS, mrenclave=frozenset({bytes(32)}))
    err = _ratls_reject(CERT_PEM, policy, when(CROSS["verify_at"]))
    assert err.failed_check == "policy.mrenclave"
    assert err.partial is not None and err.partial.mrenclave is not None
    assert err.partial.mrenclave.hex() == CASES["gramine_ratls"]["mrenclave"]
    assert err.partial.checks[-1] == "ratls.key_binding:spki-sha256"
    assert "tcb.status" in err.partial.checks and "enclave.identity" not in err.partial.checks


@pytest.mark.parametrize(
    ("at", "failed_check"),
    [("2000-06-01T00:00:00Z", "ratls.not_yet_valid"), ("2031-01-02T00:00:00Z", "ratls.expired")],
)
def test_certificate_outside_its_window(at: str, failed_check: str) -> None:
    err = _ratls_reject(CERT_PEM, ANY_STATUS, when(at))
    assert err.failed_check == failed_check
    assert err.partial == PartialResult(checks=("ratls.self_signature",))


def test_unreadable_certificate() -> None:
    err = _ratls_reject(b"not a certificate", ANY_STATUS, when(CROSS["verify_at"]))
    assert err.failed_check == "ratls.format"
    assert err.partial == PartialResult()


def _certificate(quote: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    cert = ratls.build_certificate(
        key=key or ec.generate_private_key(ec.SECP256R1()),
        host="localhost",
        deployment_id=uuid.uuid4(),
        not_after=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
        quote=quote,
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_quote_that_binds_another_key() -> None:
    # Gramine's genuine quote in a certificate for a key of our own.
    quote = ratls.extract_evidence(ratls.load_certificate(CERT_PEM))[-1].quote
    err = _ratls_reject(_certificate(quote), ANY_STATUS, when(CROSS["verify_at"]))
    assert err.failed_check == "ratls.key_binding"
    assert err.partial is not None
    assert err.partial.checks == RATLS_PASSED
    _assert_no_identity(err.partial)


# --- the TCB rules and the rest of the policy, on simulation collateral ---------------------------

MRENCLAVE = bytes(range(32))
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> SimulationQuoteProvider:
    return SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=bytes(range(32, 64)),
        directory=tmp_path_factory.mktemp("sim"),
    )


def _resigned(provider: SimulationQuoteProvider, name: str, edit: Callable[[Any], None]) -> bytes:
    """The simulation's ``name`` document, edited and signed again with its TCB signing key."""
    directory = provider.pki.collateral_dir
    key = serialization.load_pem_private_key(
        (directory.parent / "tcb_signing.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    outer_key = {"tcb_info.json": "tcbInfo", "qe_identity.json": "enclaveIdentity"}[name]
    body = json.loads((directory / name).read_bytes())[outer_key]
    edit(body)
    text = json.dumps(body, separators=(",", ":")).encode()
    r, s = decode_dss_signature(key.sign(text, ec.ECDSA(hashes.SHA256())))
    signature = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex().encode()
    return b'{"' + outer_key.encode() + b'":' + text + b',"signature":"' + signature + b'"}'


def _sim_reject(
    provider: SimulationQuoteProvider,
    policy: Policy = ANY_STATUS,
    quote: bytes | None = None,
    **documents: bytes,
) -> VerificationError:
    collateral = dataclasses.replace(
        Collateral.from_directory(provider.pki.collateral_dir), **documents
    )
    verifier = Verifier(
        collateral=collateral,
        policy=policy,
        trust_root=provider.pki.ca_certificate,
        simulation=True,
    )
    err = _reject(verifier, quote or provider.quote(REPORT_DATA), None)
    assert err.partial is not None and err.partial.simulation is True
    return err


def _level(body: Any, **changes: Any) -> None:
    body["tcbLevels"][0].update(changes)


def test_revoked_tcb_is_not_a_policy_choice(provider: SimulationQuoteProvider) -> None:
    tcb_info = _resigned(provider, "tcb_info.json", lambda b: _level(b, tcbStatus="Revoked"))
    err = _sim_reject(provider, tcb_info=tcb_info)
    assert err.failed_check == "tcb.revoked"
    assert err.partial is not None and err.partial.tcb_status == "Revoked"
    assert err.partial.mrenclave == MRENCLAVE
    assert err.partial.checks == _upto("qe.identity")


def test_tcb_levels_that_do_not_match(provider: SimulationQuoteProvider) -> None:
    def above(body: Any) -> None:
        for component in body["tcbLevels"][0]["tcb"]["sgxtcbcomponents"]:
            component["svn"] = 255

    err = _sim_reject(provider, tcb_info=_resigned(provider, "tcb_info.json", above))
    assert err.failed_check == "tcb.platform_not_supported"
    qe_identity = _resigned(
        provider, "qe_identity.json", lambda b: b["tcbLevels"][0]["tcb"].update(isvsvn=255)
    )
    err = _sim_reject(provider, qe_identity=qe_identity)
    assert err.failed_check == "tcb.qe_not_supported"
    qe_identity = _resigned(
        provider, "qe_identity.json", lambda b: _level(b, tcbStatus="SWHardeningNeeded")
    )
    err = _sim_reject(provider, qe_identity=qe_identity)
    assert err.failed_check == "tcb.qe_status_unknown"
    assert err.partial is not None and err.partial.tcb_status is None
    assert err.partial.checks == _upto("qe.identity")


def test_quoting_enclave_not_the_identity(provider: SimulationQuoteProvider) -> None:
    qe_identity = _resigned(provider, "qe_identity.json", lambda b: b.update(isvprodid=9))
    err = _sim_reject(provider, qe_identity=qe_identity)
    assert err.failed_check == "qe.identity"
    assert err.partial is not None and err.partial.checks == _upto("collateral.revocation")
    # Another enclave than Intel's QE holds the attestation key: it could sign any report body,
    # so the body's MRENCLAVE is not reported as the enclave's.
    _assert_no_identity(err.partial)
    assert err.partial.quote is not None
    assert err.partial.quote.report_body.mr_enclave == MRENCLAVE  # there, but not claimed


def _revoking_pck_crl(provider: SimulationQuoteProvider) -> bytes:
    """A PCK CRL that revokes the simulation's PCK leaf, signed by its PCK CA."""
    directory = provider.pki.collateral_dir.parent
    ca_key = serialization.load_pem_private_key(
        (directory / "pck_ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((directory / "pck_ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((directory / "pck.pem").read_bytes())
    now = dt.datetime.now(dt.timezone.utc)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.serial_number)
        .revocation_date(now - dt.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(ca_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_revoked_pck_key_establishes_no_identity(provider: SimulationQuoteProvider) -> None:
    # A leaked PCK key, once revoked, can still certify an attestation key and so sign a quote
    # for any MRENCLAVE: the quote signature verifies, and nothing of the body is established.
    err = _sim_reject(provider, pck_crl=_revoking_pck_crl(provider))
    assert err.failed_check == "pck.revoked"
    assert "PCK leaf certificate" in str(err)
    assert err.partial is not None and err.partial.checks == _upto("collateral.freshness")
    _assert_no_identity(err.partial)
    assert err.partial.fmspc is not None  # the chain itself verified


def test_identity_is_established_by_the_qe_identity_check(
    provider: SimulationQuoteProvider,
) -> None:
    # The first rejection after qe.identity (a TCB level Intel revoked) carries the identity.
    tcb_info = _resigned(provider, "tcb_info.json", lambda b: _level(b, tcbStatus="Revoked"))
    err = _sim_reject(provider, tcb_info=tcb_info)
    assert err.partial is not None and err.partial.checks[-1] == "qe.identity"
    assert err.partial.to_json()["mrenclave"] == MRENCLAVE.hex()
    assert err.partial.report_data == REPORT_DATA
    assert err.partial.debug is False


def test_debug_enclave(provider: SimulationQuoteProvider) -> None:
    debug = SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=bytes(range(32, 64)),
        debug=True,
        directory=provider.pki.collateral_dir.parent,
    )
    err = _sim_reject(provider, quote=debug.quote(REPORT_DATA))
    assert err.failed_check == "policy.debug"
    assert err.partial is not None and err.partial.debug is True


def test_not_simulation_collateral(provider: SimulationQuoteProvider) -> None:
    # An Intel-signed TCB info does not chain to the simulation CA.
    err = _sim_reject(
        provider,
        tcb_info=collateral_of("automata_sgx_v3").tcb_info,
        tcb_info_issuer_chain=collateral_of("automata_sgx_v3").tcb_info_issuer_chain,
        qe_identity_issuer_chain=collateral_of("automata_sgx_v3").tcb_info_issuer_chain,
    )
    assert err.failed_check == "collateral.signing_chain"
