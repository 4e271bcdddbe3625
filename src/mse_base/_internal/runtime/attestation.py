"""Where quotes come from: Gramine's ``/dev/attestation`` inside SGX, or the simulation.

The bootstrap only sees :class:`QuoteProvider`, so the SGX and simulation paths share every line
except the quote source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mse_base._internal.dcap.quote import HEADER_SIZE, REPORT_BODY_SIZE, REPORT_DATA_SIZE
from mse_base.errors import EnvironmentMissing, Error

# The report data ends the report body, which follows the quote header.
_REPORT_DATA_OFFSET = HEADER_SIZE + REPORT_BODY_SIZE - REPORT_DATA_SIZE

# Gramine's attestation pseudo-filesystem (Gramine docs, "Attestation and Secret Provisioning",
# "/dev/attestation" interface): write 64 bytes of user report data, then read the quote.
GRAMINE_ATTESTATION_DIR = Path("/dev/attestation")


class QuoteProvider(Protocol):
    """Produces an SGX quote (version 3, ECDSA) whose report data is the given 64 bytes."""

    @property
    def simulated(self) -> bool: ...

    def quote(self, report_data: bytes) -> bytes: ...


class GramineQuoteProvider:
    """Quotes from the real SGX hardware, through Gramine's ``/dev/attestation`` files."""

    def __init__(self, root: Path = GRAMINE_ATTESTATION_DIR) -> None:
        self._root = root

    @property
    def simulated(self) -> bool:
        return False

    @classmethod
    def available(cls, root: Path = GRAMINE_ATTESTATION_DIR) -> bool:
        return (root / "quote").exists()

    def quote(self, report_data: bytes) -> bytes:
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report data must be {REPORT_DATA_SIZE} bytes")
        attestation_type = (self._root / "attestation_type").read_text().strip()
        if attestation_type != "dcap":
            raise EnvironmentMissing(
                f"Gramine reports attestation type {attestation_type!r}; the manifest must set "
                'sgx.remote_attestation = "dcap" to get an ECDSA quote'
            )
        (self._root / "user_report_data").write_bytes(report_data)
        quote = (self._root / "quote").read_bytes()
        if not quote:
            raise Error("Gramine returned an empty quote: is the host's aesmd socket mounted?")
        # The write and the read are two steps on a process-wide file: anything else in the
        # enclave (the app was imported first) could have written its own report data between
        # them, and a certificate must never carry a quote that binds someone else's key.
        if quote[_REPORT_DATA_OFFSET : _REPORT_DATA_OFFSET + REPORT_DATA_SIZE] != report_data:
            raise Error(
                "the quote from /dev/attestation does not carry the report data just written "
                "(another writer to /dev/attestation/user_report_data?); refusing to use it"
            )
        return quote
