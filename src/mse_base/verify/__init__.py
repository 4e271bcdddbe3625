"""Verify Intel SGX ECDSA quotes (v3) and RA-TLS certificates.

Example::

    from datetime import datetime, timezone
    from pathlib import Path

    from mse_base.verify import Collateral, Policy, Verifier

    # A collateral directory and its quote (run from the repository root).
    case = Path("tests/data/sgx-quotes/automata_sgx_v3")
    mrenclave = bytes.fromhex("a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd")
    policy = Policy(
        mrenclave=frozenset({mrenclave}),
        allowed_tcb_statuses=frozenset({"UpToDate", "SWHardeningNeeded"}),
    )
    verifier = Verifier(collateral=Collateral.from_directory(case), policy=policy)
    result = verifier.verify_quote(
        (case / "quote.bin").read_bytes(), at=datetime(2025, 9, 1, tzinfo=timezone.utc)
    )
    print(result.tcb_status, result.advisory_ids)  # SWHardeningNeeded ('INTEL-SA-00615',)

Every check runs in a fixed order and fails closed with a
:class:`~mse_base.errors.VerificationError` subclass whose message names the check, whose
``failed_check`` names it for a program (one of :data:`FAILED_CHECKS`), and whose ``partial``
(a :class:`PartialResult`) holds what was established before it. By default the PCK chain must
end at the pinned Intel SGX Root CA, CRLs must be fresh, and only the ``UpToDate`` TCB status
passes.
"""

from __future__ import annotations

from mse_base._internal.dcap.collateral import TCB_STATUSES, Collateral, CollateralSource
from mse_base._internal.dcap.errors import (
    CertificateChainError,
    CollateralError,
    PolicyError,
    QuoteFormatError,
    RevokedCertificateError,
    SignatureError,
    TcbStatusError,
    UnsupportedQuoteError,
)
from mse_base._internal.dcap.quote import Quote, ReportBody, parse_quote
from mse_base.errors import FAILED_CHECKS, FailedCheck, VerificationError
from mse_base.verify.policy import Policy
from mse_base.verify.verifier import PartialResult, VerificationResult, Verifier

__all__ = [
    "FAILED_CHECKS",
    "TCB_STATUSES",
    "CertificateChainError",
    "Collateral",
    "CollateralError",
    "CollateralSource",
    "FailedCheck",
    "PartialResult",
    "Policy",
    "PolicyError",
    "Quote",
    "QuoteFormatError",
    "ReportBody",
    "RevokedCertificateError",
    "SignatureError",
    "TcbStatusError",
    "UnsupportedQuoteError",
    "VerificationError",
    "VerificationResult",
    "Verifier",
    "parse_quote",
]
