"""The :class:`~mse_base.errors.VerificationError` subclasses raised by quote verification.

They live here, not in :mod:`mse_base.verify`, so that the parsers under ``_internal`` can raise
them without importing the public package (which imports the parsers). :mod:`mse_base.verify`
re-exports every one of them.
"""

from __future__ import annotations

from mse_base.errors import VerificationError


class QuoteFormatError(VerificationError):
    """The quote bytes do not follow the SGX ECDSA quote v3 layout."""


class UnsupportedQuoteError(QuoteFormatError):
    """A well-formed quote of a kind this verifier refuses (TDX, version 4, P-384 keys, ...)."""


class CertificateChainError(VerificationError):
    """A certificate (PCK chain, TCB signing chain, RA-TLS certificate) failed a check."""


class SignatureError(VerificationError):
    """The quote, the QE report or their binding does not verify."""


class CollateralError(VerificationError):
    """TCB info, QE identity or a CRL is malformed, badly signed, stale or does not match."""


class RevokedCertificateError(CollateralError):
    """A certificate of the quote or the collateral chain is listed in a CRL."""


class TcbStatusError(VerificationError):
    """The platform or QE TCB level could not be determined or is not allowed by the policy."""


class PolicyError(VerificationError):
    """The enclave identity in the quote does not match what the policy expects."""
