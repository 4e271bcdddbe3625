"""Error types that carry user-facing diagnostics.

Every error the toolkit raises on purpose derives from :class:`Error`. The CLI turns one into a
single line on stderr and a non-zero exit; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from mse_base.verify.verifier import PartialResult

#: The machine-readable name of the check a :class:`VerificationError` reports as failed (its
#: ``failed_check``). These values are API: the README lists them, tests pin the set, and a
#: value is never renamed or reused for another meaning. Names of checks that also appear in
#: ``VerificationResult.checks`` (``quote.signature``, ``collateral.platform``...) are the same
#: check; the others refine one of them (``collateral.tcb_info.expired`` is a failure of
#: ``collateral.freshness``).
FailedCheck = Literal[
    # The quote itself.
    "quote.format",
    "quote.unsupported",
    # The PCK certificate chain in the quote.
    "pck.chain",
    "pck.chain.expired",
    "pck.chain.not_yet_valid",
    "pck.extensions",
    "pck.revoked",
    # The quoting enclave's report and the quote signature.
    "qe_report.signature",
    "qe_report.binding",
    "quote.signature",
    # Collateral: obtaining it, its signing chain, each document, and what it says.
    "collateral.unavailable",
    "collateral.signing_chain",
    "collateral.signing_chain.expired",
    "collateral.signing_chain.not_yet_valid",
    "collateral.signing_chain.revoked",
    "collateral.tcb_info.format",
    "collateral.tcb_info.signature",
    "collateral.tcb_info.expired",
    "collateral.tcb_info.not_yet_valid",
    "collateral.qe_identity.format",
    "collateral.qe_identity.signature",
    "collateral.qe_identity.expired",
    "collateral.qe_identity.not_yet_valid",
    "collateral.pck_crl.format",
    "collateral.pck_crl.signature",
    "collateral.pck_crl.expired",
    "collateral.pck_crl.not_yet_valid",
    "collateral.root_ca_crl.format",
    "collateral.root_ca_crl.signature",
    "collateral.root_ca_crl.expired",
    "collateral.root_ca_crl.not_yet_valid",
    "collateral.platform",
    "qe.identity",
    # The TCB level (Intel's rules).
    "tcb.platform_not_supported",
    "tcb.qe_not_supported",
    "tcb.qe_status_unknown",
    "tcb.revoked",
    # The policy: a genuine quote of an enclave or platform the policy does not accept.
    "policy.tcb_status",
    "policy.mrenclave",
    "policy.mrsigner",
    "policy.isv_prod_id",
    "policy.isv_svn",
    "policy.debug",
    # mse-secrets push: a genuine certificate of another deployment than --uuid.
    "policy.deployment",
    # RA-TLS certificates.
    "ratls.unreachable",
    "ratls.format",
    "ratls.self_signature",
    "ratls.expired",
    "ratls.not_yet_valid",
    "ratls.evidence",
    "ratls.key_binding",
    "ratls.quotes_disagree",
    # (No value for the trust root: a bad simulation CA is a UsageError, a damaged packaged
    # Intel root an EnvironmentMissing, both raised before any quote is looked at.)
]

#: Every :data:`FailedCheck` value.
FAILED_CHECKS: frozenset[str] = frozenset(get_args(FailedCheck))


class Error(Exception):
    """Base of every error the toolkit raises on purpose."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1

    def diagnostics(self) -> str:
        """One line for a human: what was wrong and how to fix it."""
        return str(self)


class UsageError(Error):
    """A command-line value or input file is invalid; the message names it and the fix."""

    exit_code = 2


class VerificationError(Error):
    """A quote, certificate or its collateral failed a check; the message names the check.

    ``failed_check`` is the check's stable, machine-readable name (one of
    :data:`FAILED_CHECKS`; ``None`` only for an error raised outside mse-base). ``partial`` is
    what the verifier had established before the check failed (a
    :class:`~mse_base.verify.PartialResult`: the identity once the key that signed the quote is
    trusted (``qe.identity`` passed), the TCB status once evaluated, the checks that passed), or
    ``None`` when the error did not come from a :class:`~mse_base.verify.Verifier`.
    """

    exit_code = 1

    def __init__(self, message: str, *, check: FailedCheck | None = None) -> None:
        super().__init__(message)
        self.failed_check: FailedCheck | None = check
        self.partial: PartialResult | None = None


class EnvironmentMissing(Error):
    """Something the requested mode needs (Gramine, an SGX device, ...) is not on this machine."""

    exit_code = 3
