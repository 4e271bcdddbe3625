"""TCB level matching and status convergence, the way Intel's Quote Verification Library does it.

References (Intel SGX DCAP ``QuoteVerification/QVL/Src/AttestationLibrary/src/Verifiers``):

* platform level: ``TcbLevelCheck`` / ``getMatchingTcbLevel`` take the first level, in
  descending (components, PCESVN) order (``parse_tcb_info`` sorts them so), whose 16 SGX
  component SVNs are all <= the PCK certificate's and whose PCESVN is <= the PCK certificate's.
  The values come from the PCK leaf certificate, not from the quote header;
* QE level: ``EnclaveReportVerifier::getTcbStatus`` takes the first QE identity level whose
  ``isvsvn`` is <= the QE report's ISVSVN;
* ``convergeTcbStatusWithQeTcbStatus`` combines them: an OutOfDate QE turns UpToDate /
  SWHardeningNeeded into OutOfDate and the two Configuration statuses into
  OutOfDateConfigurationNeeded; a Revoked QE makes everything Revoked; otherwise the platform
  status stands.

Advisory IDs are the platform level's followed by the QE level's, without repeats. Intel's QvE
reports the platform level's only; the QE level's are kept as dcap-qvl keeps them, because they
concern the quoting enclave that vouched for this very quote.
"""

from __future__ import annotations

from dataclasses import dataclass

from mse_base._internal.dcap.collateral import QeIdentity, QeTcbLevel, TcbInfo, TcbLevel
from mse_base._internal.dcap.errors import TcbStatusError


@dataclass(frozen=True)
class TcbVerdict:
    status: str
    advisory_ids: tuple[str, ...]
    platform_level: TcbLevel
    qe_level: QeTcbLevel


def match_platform_level(info: TcbInfo, components: tuple[int, ...], pcesvn: int) -> TcbLevel:
    for level in info.levels:
        if pcesvn >= level.pcesvn and all(
            have >= need for have, need in zip(components, level.components, strict=True)
        ):
            return level
    raise TcbStatusError(
        "TCB status: the platform's TCB (PCK certificate components "
        f"{list(components)}, PCESVN {pcesvn}) is below every level of the TCB info "
        "(Intel: TCB not supported)",
        check="tcb.platform_not_supported",
    )


def match_qe_level(identity: QeIdentity, isvsvn: int) -> QeTcbLevel:
    for level in identity.levels:
        if isvsvn >= level.isvsvn:
            return level
    raise TcbStatusError(
        f"TCB status: QE ISVSVN {isvsvn} is below every level of the QE identity "
        "(Intel: QE ISVSVN not supported)",
        check="tcb.qe_not_supported",
    )


def converge(platform_status: str, qe_status: str) -> str:
    if qe_status == "OutOfDate":
        if platform_status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform_status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    if qe_status == "Revoked":
        return "Revoked"
    if qe_status not in ("UpToDate", "OutOfDate"):
        # QE identity levels only carry these three statuses; anything else is not understood,
        # and a verdict we do not understand must not pass.
        raise TcbStatusError(
            f"TCB status: unexpected QE identity status {qe_status!r}",
            check="tcb.qe_status_unknown",
        )
    return platform_status


def evaluate(
    info: TcbInfo,
    identity: QeIdentity,
    *,
    components: tuple[int, ...],
    pcesvn: int,
    qe_isvsvn: int,
) -> TcbVerdict:
    platform = match_platform_level(info, components, pcesvn)
    qe = match_qe_level(identity, qe_isvsvn)
    advisories = tuple(dict.fromkeys(platform.advisory_ids + qe.advisory_ids))
    return TcbVerdict(converge(platform.status, qe.status), advisories, platform, qe)
