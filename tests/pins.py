"""API values the tests pin in one place: renaming or removing one breaks clients."""

from __future__ import annotations

# The JSON object mse-verify --json prints, verified or not.
PINNED_JSON_FIELDS = (
    "verified",
    "failed_check",
    "reasons",
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "isv_svn",
    "report_data",
    "debug",
    "tcb_status",
    "advisory_ids",
    "simulation",
    "measurement",
    "fmspc",
    "checks",
    "quote_sha256",
)

# The checks of a verified quote, in order (VerificationResult.checks).
QUOTE_CHECKS = (
    "quote.format",
    "pck.chain",
    "qe_report.signature",
    "qe_report.binding",
    "quote.signature",
    "collateral.signatures",
    "collateral.crl_signatures",
    "collateral.platform",
    "collateral.freshness",
    "collateral.revocation",
    "qe.identity",
    "tcb.status",
    "enclave.identity",
)
