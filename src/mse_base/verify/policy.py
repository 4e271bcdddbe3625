"""What a verified quote must show: enclave identity and acceptable TCB statuses.

A :class:`Policy` is a value. It says what is expected; :class:`~mse_base.verify.Verifier` checks
it after every cryptographic and collateral check has passed. Anything left as ``None`` is not
checked, and anything risky (debug enclaves, TCB statuses other than UpToDate, stale CRLs) must
be named explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from mse_base._internal.dcap.collateral import TCB_STATUSES
from mse_base._internal.dcap.errors import PolicyError, TcbStatusError
from mse_base._internal.dcap.quote import ReportBody
from mse_base.errors import UsageError

__all__ = ["TCB_STATUSES", "Policy"]


def _measurement(value: object, name: str) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise UsageError(f"policy {name}: {value!r} is not hex") from None
    if not isinstance(value, bytes) or len(value) != 32:
        raise UsageError(f"policy {name}: expected 32 bytes (64 hex digits)")
    return value


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Expectations for one enclave.

    ``mrenclave`` accepts any of several measurements (e.g. the old and the new release during a
    rollout). ``allowed_tcb_statuses`` defaults to ``{"UpToDate"}``; every other Intel status
    must be listed by name. ``allow_stale_crls`` is INSECURE: it accepts CRLs past their
    nextUpdate, so a revocation published since then goes unseen; it exists for archived
    collateral and test data only.
    """

    mrenclave: frozenset[bytes] | None = None
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    allow_debug: bool = False
    allowed_tcb_statuses: frozenset[str] = field(default=frozenset({"UpToDate"}))
    allow_stale_crls: bool = False

    def __post_init__(self) -> None:
        # Normalise friendly inputs (a set, a list, hex strings) into the canonical value, and
        # refuse ones that could never match, so that a typo fails here rather than as a
        # confusing mismatch later.
        if self.mrenclave is not None:
            given: object = self.mrenclave
            raw: Iterable[object] = (
                [given] if isinstance(given, bytes | str) else cast("Iterable[object]", given)
            )
            values = frozenset(_measurement(v, "mrenclave") for v in raw)
            if not values:
                raise UsageError("policy mrenclave: empty; give at least one or None")
            object.__setattr__(self, "mrenclave", values)
        if self.mrsigner is not None:
            object.__setattr__(self, "mrsigner", _measurement(self.mrsigner, "mrsigner"))
        for name in ("isv_prod_id", "min_isv_svn"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= 0xFFFF):
                raise UsageError(f"policy {name}: expected an integer in 0..65535")
        given_statuses: object = self.allowed_tcb_statuses
        if isinstance(given_statuses, str):
            given_statuses = {given_statuses}
        statuses = frozenset(cast("Iterable[str]", given_statuses))
        unknown = statuses - TCB_STATUSES
        if unknown:
            raise UsageError(
                f"policy allowed_tcb_statuses: unknown {sorted(unknown)}; "
                f"allowed ones: {', '.join(sorted(TCB_STATUSES - {'Revoked'}))}"
            )
        if not statuses:
            raise UsageError("policy allowed_tcb_statuses: empty; nothing could pass")
        if "Revoked" in statuses:
            # Intel revokes a TCB level when its keys may be in an attacker's hands: nothing
            # such a platform signs proves anything, whatever the policy wants.
            raise UsageError("policy allowed_tcb_statuses: Revoked can never be allowed")
        object.__setattr__(self, "allowed_tcb_statuses", statuses)

    def check_tcb_status(self, status: str, advisory_ids: tuple[str, ...]) -> None:
        if status not in self.allowed_tcb_statuses:
            advisories = f" (advisories: {', '.join(advisory_ids)})" if advisory_ids else ""
            raise TcbStatusError(
                f"TCB status: {status}{advisories} is not allowed by the policy "
                f"(allowed: {', '.join(sorted(self.allowed_tcb_statuses))})",
                # No policy can allow Revoked (see __post_init__): the platform's keys may be
                # an attacker's, so this is "not genuine", not "not what this policy wants".
                check="tcb.revoked" if status == "Revoked" else "policy.tcb_status",
            )

    def check_enclave(self, body: ReportBody) -> None:
        if self.mrenclave is not None and body.mr_enclave not in self.mrenclave:
            expected = ", ".join(sorted(m.hex() for m in self.mrenclave))
            raise PolicyError(
                f"enclave identity: MRENCLAVE {body.mr_enclave.hex()} is not the expected "
                f"{expected}",
                check="policy.mrenclave",
            )
        if self.mrsigner is not None and body.mr_signer != self.mrsigner:
            raise PolicyError(
                f"enclave identity: MRSIGNER {body.mr_signer.hex()} is not the expected "
                f"{self.mrsigner.hex()}",
                check="policy.mrsigner",
            )
        if self.isv_prod_id is not None and body.isv_prod_id != self.isv_prod_id:
            raise PolicyError(
                f"enclave identity: ISV product ID {body.isv_prod_id} is not the expected "
                f"{self.isv_prod_id}",
                check="policy.isv_prod_id",
            )
        if self.min_isv_svn is not None and body.isv_svn < self.min_isv_svn:
            raise PolicyError(
                f"enclave identity: ISV SVN {body.isv_svn} is below the minimum {self.min_isv_svn}",
                check="policy.isv_svn",
            )
        if body.debug and not self.allow_debug:
            raise PolicyError(
                "enclave identity: the enclave runs in DEBUG mode (its memory is readable by "
                "the host); refused unless debug enclaves are allowed (Policy allow_debug=True, "
                "mse-verify --allow-debug)",
                check="policy.debug",
            )
