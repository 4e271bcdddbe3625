"""Fixtures over the real Intel quotes and collateral in tests/data/sgx-quotes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from mse_base.verify import TCB_STATUSES, Collateral, Policy
from tests.shared_data import SHARED_QUOTES

SHARED = SHARED_QUOTES
CASES: dict[str, dict[str, Any]] = (
    {c["case"]: c for c in json.loads((SHARED / "expected.json").read_text())}
    if SHARED.is_dir()
    else {}
)
# Cases with their own collateral and an SGX v3 quote (the TDX one is refused before collateral).
SGX_WITH_COLLATERAL = ["phala_sgx_v3", "automata_sgx_v3", "mobilecoin_sgx_v3"]
ANY_STATUS = Policy(allowed_tcb_statuses=TCB_STATUSES - {"Revoked"})
ANY_STATUS_STALE_CRLS = Policy(
    allowed_tcb_statuses=TCB_STATUSES - {"Revoked"}, allow_stale_crls=True
)


def when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def quote_of(case: str) -> bytes:
    return (SHARED / case / "quote.bin").read_bytes()


def collateral_of(case: str) -> Collateral:
    return Collateral.from_directory(SHARED / case)


def policy_for(case: str) -> Policy:
    """Allows every status; tolerates the stale PCK CRL only where the data has no fresh one."""
    return ANY_STATUS_STALE_CRLS if case == "mobilecoin_sgx_v3" else ANY_STATUS


@pytest.fixture(autouse=True, scope="session")
def _shared_data() -> None:
    if not CASES:
        pytest.fail(f"the shared quotes are missing: {SHARED}")
