"""Direct tests of the core TCB and QE identity rules, so that removing one of them fails a test.

* ``tcb.evaluate`` on hand-built TCB info / QE identity: platform level matching (every one of
  the 16 components and the PCESVN counts), QE level matching, status convergence (Intel QVL
  ``convergeTcbStatusWithQeTcbStatus``) and advisory IDs;
* ``Verifier._check_qe_identity`` on the real phala quote and QE identity, one field at a time;
* MISCSELECT byte order in the QE identity JSON (little-endian, like Intel QVL and dcap-qvl);
* TCB levels sorted like Intel QVL before matching, duplicates refused.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from mse_base._internal.dcap.collateral import (
    QeIdentity,
    QeTcbLevel,
    TcbInfo,
    TcbLevel,
    parse_qe_identity,
    parse_tcb_info,
    split_signed_json,
)
from mse_base._internal.dcap.quote import Quote, parse_quote
from mse_base._internal.dcap.tcb import TcbVerdict, evaluate
from mse_base.verify import CollateralError, TcbStatusError
from mse_base.verify.verifier import Verifier

from .conftest import SHARED

PHALA = SHARED / "phala_sgx_v3"
DATE = datetime(2024, 3, 13, tzinfo=timezone.utc)

# --- tcb.evaluate on hand-built documents -------------------------------------------------------

# Distinct values per position, so a comparison against the wrong position would show.
TOP = tuple(range(20, 36))
MIDDLE = (10,) * 16
BOTTOM = (1,) * 16


def _level(components: tuple[int, ...], pcesvn: int, status: str, *ids: str) -> TcbLevel:
    return TcbLevel(
        components=components, pcesvn=pcesvn, tcb_date=DATE, status=status, advisory_ids=ids
    )


def _qe_level(isvsvn: int, status: str, *ids: str) -> QeTcbLevel:
    return QeTcbLevel(isvsvn=isvsvn, tcb_date=DATE, status=status, advisory_ids=ids)


INFO = TcbInfo(
    issue_date=DATE,
    next_update=DATE,
    fmspc=bytes(6),
    pce_id=bytes(2),
    tcb_type=0,
    tcb_evaluation_data_number=17,
    levels=(
        _level(TOP, 13, "UpToDate"),
        _level(MIDDLE, 11, "ConfigurationNeeded", "INTEL-SA-00001", "INTEL-SA-00615"),
        _level(BOTTOM, 5, "OutOfDate", "INTEL-SA-00002"),
    ),
)
IDENTITY = QeIdentity(
    issue_date=DATE,
    next_update=DATE,
    tcb_evaluation_data_number=17,
    miscselect=0,
    miscselect_mask=0xFFFFFFFF,
    attributes=bytes(16),
    attributes_mask=bytes(16),
    mrsigner=bytes(32),
    isvprodid=1,
    levels=(
        _qe_level(8, "UpToDate"),
        _qe_level(6, "OutOfDate", "INTEL-SA-00615", "INTEL-SA-00999"),
        _qe_level(3, "Revoked", "INTEL-SA-00003"),
    ),
)
QE_TOP = 8


def _evaluate(
    components: tuple[int, ...] = TOP,
    pcesvn: int = 13,
    qe_isvsvn: int = QE_TOP,
    info: TcbInfo = INFO,
) -> TcbVerdict:
    return evaluate(info, IDENTITY, components=components, pcesvn=pcesvn, qe_isvsvn=qe_isvsvn)


def _lowered(position: int) -> tuple[int, ...]:
    return tuple(svn - 1 if i == position else svn for i, svn in enumerate(TOP))


@pytest.mark.parametrize(
    ("components", "pcesvn"),
    [(TOP, 13), (tuple(svn + 1 for svn in TOP), 14)],
    ids=["equal", "above"],
)
def test_platform_at_or_above_the_top_level_gets_its_status(
    components: tuple[int, ...], pcesvn: int
) -> None:
    verdict = _evaluate(components, pcesvn)
    assert verdict.platform_level is INFO.levels[0]
    assert verdict.qe_level is IDENTITY.levels[0]
    assert verdict.status == "UpToDate"
    assert verdict.advisory_ids == ()


@pytest.mark.parametrize("position", [0, 1, 7, 15])
def test_one_component_below_the_top_level_gets_the_next_level(position: int) -> None:
    verdict = _evaluate(_lowered(position))
    assert verdict.platform_level is INFO.levels[1]
    assert verdict.status == "ConfigurationNeeded"


def test_pcesvn_alone_below_the_top_level_gets_the_next_level() -> None:
    verdict = _evaluate(TOP, 12)
    assert verdict.platform_level is INFO.levels[1]
    assert verdict.status == "ConfigurationNeeded"


def test_the_first_matching_level_wins_not_a_lower_one() -> None:
    # Meets the middle level exactly (components and PCESVN): not pushed down to the bottom one.
    verdict = _evaluate(MIDDLE, 11)
    assert verdict.platform_level is INFO.levels[1]
    below_middle = _evaluate(MIDDLE, 10)
    assert below_middle.platform_level is INFO.levels[2]
    assert below_middle.status == "OutOfDate"


@pytest.mark.parametrize(
    ("components", "pcesvn", "why"),
    [
        ((0,) * 16, 13, r"components \[0, 0,"),
        (tuple(0 if i == 15 else svn for i, svn in enumerate(TOP)), 13, r"34, 0\], PCESVN 13"),
        (TOP, 4, r"PCESVN 4\)"),
    ],
    ids=["all-components", "16th-component", "pcesvn"],
)
def test_platform_below_every_level_is_refused(
    components: tuple[int, ...], pcesvn: int, why: str
) -> None:
    with pytest.raises(TcbStatusError, match=why) as caught:
        _evaluate(components, pcesvn)
    assert "below every level of the TCB info" in str(caught.value)


@pytest.mark.parametrize(
    ("components", "pcesvn", "qe_isvsvn", "qe_level", "status"),
    [
        (TOP, 13, QE_TOP - 1, 1, "OutOfDate"),
        (TOP, 13, 6, 1, "OutOfDate"),
        (MIDDLE, 11, QE_TOP - 1, 1, "OutOfDateConfigurationNeeded"),
        (TOP, 13, 3, 2, "Revoked"),
        (MIDDLE, 11, 5, 2, "Revoked"),
    ],
    ids=[
        "uptodate+qe-outofdate",
        "uptodate+qe-outofdate-exact",
        "configneeded+qe-outofdate",
        "uptodate+qe-revoked",
        "configneeded+qe-revoked",
    ],
)
def test_qe_isvsvn_below_the_qe_top_level_converges(
    components: tuple[int, ...], pcesvn: int, qe_isvsvn: int, qe_level: int, status: str
) -> None:
    verdict = _evaluate(components, pcesvn, qe_isvsvn)
    assert verdict.qe_level is IDENTITY.levels[qe_level]
    assert verdict.status == status


def test_qe_below_every_level_is_refused() -> None:
    with pytest.raises(
        TcbStatusError, match=r"QE ISVSVN 2 is below every level of the QE identity"
    ):
        _evaluate(qe_isvsvn=2)


def test_advisory_ids_are_the_platform_levels_then_the_qe_levels_without_repeats() -> None:
    verdict = _evaluate(MIDDLE, 11, QE_TOP - 1)
    assert verdict.advisory_ids == ("INTEL-SA-00001", "INTEL-SA-00615", "INTEL-SA-00999")
    # Only the QE level carries IDs: they are reported on their own.
    assert _evaluate(TOP, 13, 3).advisory_ids == ("INTEL-SA-00003",)


# --- Verifier._check_qe_identity on the real phala quote ----------------------------------------


def _phala_quote() -> Quote:
    return parse_quote((PHALA / "quote.bin").read_bytes())


def _phala_qe_identity_text() -> bytes:
    text, _ = split_signed_json((PHALA / "qe_identity.json").read_bytes(), "enclaveIdentity")
    return text


def _with_qe_report(quote: Quote, **changes: Any) -> Quote:
    return dataclasses.replace(quote, qe_report=dataclasses.replace(quote.qe_report, **changes))


def _flip(data: bytes, index: int, bits: int) -> bytes:
    return data[:index] + bytes([data[index] ^ bits]) + data[index + 1 :]


def test_the_real_qe_matches_its_identity() -> None:
    Verifier._check_qe_identity(parse_qe_identity(_phala_qe_identity_text()), _phala_quote())


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("mrsigner", "MRSIGNER"),
        ("isvprodid", "ISV product ID"),
        ("miscselect", "MISCSELECT"),
        ("attributes", "ATTRIBUTES"),
    ],
)
def test_each_qe_identity_field_mismatch_is_refused(field: str, message: str) -> None:
    identity = parse_qe_identity(_phala_qe_identity_text())
    quote = _phala_quote()
    # The mask covers the changed bit in every case: a mismatch, not a masked-out difference.
    assert identity.miscselect_mask == 0xFFFFFFFF
    assert identity.attributes_mask[0] & 0x01
    changed: dict[str, Any] = {
        "mrsigner": _flip(identity.mrsigner, 31, 0x01),
        "isvprodid": identity.isvprodid + 1,
        "miscselect": identity.miscselect ^ 0x01,
        "attributes": _flip(identity.attributes, 0, 0x01),
    }
    bad = dataclasses.replace(identity, **{field: changed[field]})
    with pytest.raises(CollateralError, match=f"QE identity: the QE's {message}"):
        Verifier._check_qe_identity(bad, quote)


def test_qe_attributes_differing_only_under_a_zero_mask_pass() -> None:
    identity = parse_qe_identity(_phala_qe_identity_text())
    quote = _phala_quote()
    # Intel's mask leaves out bit 2 of byte 0 (SGX_FLAGS_PROVISION_KEY) and all of XFRM's top half.
    assert identity.attributes_mask[0] & 0x04 == 0
    assert identity.attributes_mask[8:] == bytes(8)
    attributes = _flip(quote.qe_report.attributes, 0, 0x04)
    attributes = attributes[:8] + bytes(b ^ 0xFF for b in attributes[8:])
    Verifier._check_qe_identity(identity, _with_qe_report(quote, attributes=attributes))
    # The same report with a bit flipped under the mask is refused: the masking is what passed.
    refused = _with_qe_report(quote, attributes=_flip(attributes, 0, 0x01))
    with pytest.raises(CollateralError, match="ATTRIBUTES"):
        Verifier._check_qe_identity(identity, refused)


def test_qe_miscselect_differing_only_under_a_zero_mask_passes() -> None:
    identity = dataclasses.replace(
        parse_qe_identity(_phala_qe_identity_text()), miscselect_mask=0xFFFFFFEF
    )
    quote = _with_qe_report(_phala_quote(), misc_select=0x10)
    Verifier._check_qe_identity(identity, quote)
    with pytest.raises(CollateralError, match="MISCSELECT"):
        Verifier._check_qe_identity(identity, _with_qe_report(quote, misc_select=0x11))


# --- MISCSELECT byte order ----------------------------------------------------------------------


@pytest.mark.parametrize(("miscselect", "matches"), [("01000000", True), ("00000001", False)])
def test_qe_identity_miscselect_hex_is_little_endian(miscselect: str, matches: bool) -> None:
    # Intel's JSON hex is the report's 4 MISCSELECT bytes in memory order (Intel QVL
    # EnclaveReportVerifier and dcap-qvl read it as a little-endian u32), so "01000000" is 1.
    text = _phala_qe_identity_text()
    assert b'"miscselect":"00000000","miscselectMask":"FFFFFFFF"' in text
    edited = text.replace(b'"miscselect":"00000000"', f'"miscselect":"{miscselect}"'.encode())
    identity = parse_qe_identity(edited)
    quote = _with_qe_report(_phala_quote(), misc_select=1)
    if matches:
        Verifier._check_qe_identity(identity, quote)
    else:
        with pytest.raises(CollateralError, match="MISCSELECT"):
            Verifier._check_qe_identity(identity, quote)


# --- TCB level order ----------------------------------------------------------------------------


def _phala_tcb_info_json() -> dict[str, Any]:
    text, _ = split_signed_json((PHALA / "tcb_info.json").read_bytes(), "tcbInfo")
    value: dict[str, Any] = json.loads(text)
    return value


def _parse_edited(document: dict[str, Any]) -> TcbInfo:
    return parse_tcb_info(json.dumps(document, separators=(",", ":")).encode())


def _key(level: TcbLevel) -> tuple[tuple[int, ...], int]:
    return level.components, level.pcesvn


@pytest.mark.parametrize("order", ["reversed", "rotated"])
def test_tcb_levels_are_sorted_like_intel_qvl(order: str) -> None:
    document = _phala_tcb_info_json()
    original = _parse_edited(document).levels
    # The served order is already Intel's: (16 components, pcesvn), descending lexicographically.
    assert [_key(level) for level in original] == sorted(map(_key, original), reverse=True)
    levels = document["tcbLevels"]
    document["tcbLevels"] = levels[::-1] if order == "reversed" else levels[5:] + levels[:5]
    assert _parse_edited(document).levels == original


@pytest.mark.parametrize("same", ["copy", "other-status"])
def test_duplicate_tcb_levels_are_refused(same: str) -> None:
    document = _phala_tcb_info_json()
    levels = document["tcbLevels"]
    duplicate = dict(levels[3])
    if same == "other-status":
        # Same (components, pcesvn) with another verdict: which one applies would be ambiguous.
        duplicate["tcbStatus"] = "UpToDate"
    levels.insert(4, duplicate)
    with pytest.raises(CollateralError, match=r"TCB info: the level .* is listed twice"):
        _parse_edited(document)
