"""Policy: enclave identity and TCB status expectations, on a real quote."""

from __future__ import annotations

import pytest

from mse_base.errors import UsageError
from mse_base.verify import TCB_STATUSES, Policy, PolicyError, TcbStatusError, Verifier

from .conftest import CASES, collateral_of, quote_of, when

CASE = "automata_sgx_v3"
EXP = CASES[CASE]
MRENCLAVE = bytes.fromhex(EXP["mrenclave"])
MRSIGNER = bytes.fromhex(EXP["mrsigner"])
OK_STATUS = frozenset({"SWHardeningNeeded"})


def _verify(policy: Policy) -> object:
    verifier = Verifier(collateral=collateral_of(CASE), policy=policy)
    return verifier.verify_quote(quote_of(CASE), at=when(EXP["verify_at"]))


def test_matching_policy_passes() -> None:
    policy = Policy(
        mrenclave=frozenset({bytes(32), MRENCLAVE}),
        mrsigner=MRSIGNER,
        isv_prod_id=0,
        min_isv_svn=0,
        allowed_tcb_statuses=OK_STATUS,
    )
    assert _verify(policy)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(mrenclave=frozenset({bytes(32)}), allowed_tcb_statuses=OK_STATUS), "MRENCLAVE"),
        (Policy(mrsigner=bytes(32), allowed_tcb_statuses=OK_STATUS), "MRSIGNER"),
        (Policy(isv_prod_id=1, allowed_tcb_statuses=OK_STATUS), "ISV product ID"),
        (Policy(min_isv_svn=1, allowed_tcb_statuses=OK_STATUS), "ISV SVN 0 is below"),
    ],
)
def test_identity_mismatch_is_refused(policy: Policy, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        _verify(policy)


@pytest.mark.parametrize(
    "allowed", [frozenset({"UpToDate"}), TCB_STATUSES - {"SWHardeningNeeded", "Revoked"}]
)
def test_status_not_allowed_is_refused(allowed: frozenset[str]) -> None:
    with pytest.raises(TcbStatusError, match=r"SWHardeningNeeded .*INTEL-SA-00615.* not allowed"):
        _verify(Policy(allowed_tcb_statuses=allowed))


def test_policy_normalises_friendly_inputs() -> None:
    policy = Policy(
        mrenclave={MRENCLAVE.hex()},  # type: ignore[arg-type]
        mrsigner=MRSIGNER.hex(),  # type: ignore[arg-type]
        allowed_tcb_statuses="SWHardeningNeeded",  # type: ignore[arg-type]
    )
    assert policy.mrenclave == frozenset({MRENCLAVE})
    assert policy.mrsigner == MRSIGNER
    assert policy.allowed_tcb_statuses == OK_STATUS
    assert _verify(policy)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mrenclave": frozenset({b"short"})},
        {"mrenclave": frozenset()},
        {"mrsigner": "zz" * 32},
        {"isv_prod_id": -1},
        {"min_isv_svn": 70000},
        {"allowed_tcb_statuses": frozenset({"UpToDte"})},
        {"allowed_tcb_statuses": frozenset()},
    ],
)
def test_invalid_policy_is_a_usage_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Policy(None)  # type: ignore[call-arg]
    policy = Policy()
    with pytest.raises(AttributeError):
        policy.allow_debug = True  # type: ignore[misc]
    assert policy.allowed_tcb_statuses == frozenset({"UpToDate"})
    assert policy.allow_stale_crls is False


def test_revoked_can_never_be_allowed() -> None:
    with pytest.raises(UsageError, match="Revoked can never be allowed"):
        Policy(allowed_tcb_statuses=frozenset({"UpToDate", "Revoked"}))
