"""Strict parser for Intel SGX ECDSA quotes, version 3.

Layout from Intel's "SGX ECDSA Quote Library API" (appendix A, "Quote Format", version 3)::

    header            48 bytes   version, attestation key type, tee type, QE/PCE SVN, QE vendor
    report body      384 bytes   the enclave's SGX REPORT body (sgx_report_body_t)
    signature data length   u32
    signature data:
        quote signature        64   raw ECDSA P-256 r||s over header || report body
        attestation key        64   raw P-256 point X||Y
        QE report             384   the Quoting Enclave's report body
        QE report signature    64   r||s by the PCK leaf key
        QE auth data           u16 length + bytes
        certification data     u16 type + u32 length + bytes (type 5 = PEM PCK chain;
                                type 6 = QE report certification data wrapping a type 5)

Every length comes from the buffer and is checked against what is left of it before use.

Trailing-bytes policy: the quote must end exactly where its declared signature data ends, and the
signature data must be exactly consumed by its fields. Bytes after the declared end (some
producers pad quotes with zeros) are rejected, because nothing signs them and an attacker could
otherwise smuggle data there. The NUL bytes that Intel's quoting library writes at the end of the
PEM chain *inside* the declared certification data are allowed.

TDX quotes (tee_type 0x81) and version 4 quotes are recognised and refused with a clear reason;
so are unknown versions, attestation key types and TEE types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mse_base._internal.dcap.errors import QuoteFormatError, UnsupportedQuoteError

HEADER_SIZE = 48
REPORT_BODY_SIZE = 384
# The report body's last field: what the enclave chose to bind (RA-TLS: its key's hash).
REPORT_DATA_SIZE = 64
SIGNATURE_SIZE = 64
ATTESTATION_KEY_SIZE = 64

QUOTE_VERSION_3 = 3
ATTESTATION_KEY_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00
TEE_TYPE_TDX = 0x81
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6

#: Intel's QE vendor ID (``939a7233-f79c-4ca9-940a-0db3957f0607``), written by Intel's QE3.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

#: The QE authentication data with which an mse-base simulation PKI certifies the attestation key
#: it hands ``mse-run --direct``'s enclave: that enclave is the signed manifest run by Gramine
#: without SGX, so the quote's MRENCLAVE is the real measurement (``mse-run --simulation`` quotes a
#: simulated one). The QE report binds it (``qe_report.binding``) under the PCK key's signature,
#: so it is the simulation PKI's word: a verifier reads it only when it trusts a simulation CA,
#: never under Intel's root. 32 bytes, the size Intel's QE writes.
DIRECT_MEASUREMENT_MARK = b"mse-base direct: real MRENCLAVE".ljust(32, b"\0")

_KEY_TYPE_NAMES = {2: "ECDSA-256 (P-256)", 3: "ECDSA-384 (P-384)"}

# Upper bound for a whole quote: far above any real one (~5 KB), low enough that a hostile length
# field cannot make us hold or scan megabytes.
MAX_QUOTE_SIZE = 64 * 1024

# Attribute flag bit 1 (SGX_FLAGS_DEBUG) in the first attributes byte.
_FLAG_DEBUG = 0x02


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class ReportBody:
    """An SGX report body (``sgx_report_body_t``), for the enclave or for the QE."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        """True when the enclave was launched in debug mode (its memory is readable)."""
        return bool(self.attributes[0] & _FLAG_DEBUG)


@dataclass(frozen=True)
class Quote:
    """A parsed SGX ECDSA quote v3. ``signed_bytes`` is what the attestation key signed."""

    raw: bytes
    header: QuoteHeader
    report_body: ReportBody
    signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data_type: int
    pck_chain_pem: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[: HEADER_SIZE + REPORT_BODY_SIZE]


class _Reader:
    """Consumes a buffer front to back; every read is bounded by what is left."""

    __slots__ = ("_data", "_end", "_pos", "_what")

    def __init__(self, data: bytes, what: str, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        self._what = what

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def take(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise QuoteFormatError(
                f"malformed quote: {self._what} is truncated in {field} "
                f"(needs {size} bytes, {self.remaining} left)",
                check="quote.format",
            )
        out = self._data[self._pos : self._pos + size]
        self._pos += size
        return out

    def u16(self, field: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field))[0]
        return value

    def sub(self, size: int, field: str, what: str) -> _Reader:
        """A reader over the next ``size`` bytes, which this reader skips."""
        if size > self.remaining:
            raise QuoteFormatError(
                f"malformed quote: {field} declares {size} bytes but only "
                f"{self.remaining} are left in {self._what}",
                check="quote.format",
            )
        child = _Reader(self._data, what, self._pos, self._pos + size)
        self._pos += size
        return child

    def expect_end(self) -> None:
        if self.remaining:
            raise QuoteFormatError(
                f"malformed quote: {self.remaining} unexpected bytes after the end of {self._what}",
                check="quote.format",
            )


_REPORT_BODY = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
assert _REPORT_BODY.size == REPORT_BODY_SIZE


def parse_report_body(raw: bytes) -> ReportBody:
    """Parse a 384-byte SGX report body."""
    if len(raw) != REPORT_BODY_SIZE:
        raise QuoteFormatError(
            f"malformed quote: report body is {len(raw)} bytes, expected 384", check="quote.format"
        )
    (
        cpu_svn,
        misc_select,
        _reserved1,
        isv_ext_prod_id,
        attributes,
        mr_enclave,
        _reserved2,
        mr_signer,
        _reserved3,
        config_id,
        isv_prod_id,
        isv_svn,
        config_svn,
        _reserved4,
        isv_family_id,
        report_data,
    ) = _REPORT_BODY.unpack(raw)
    return ReportBody(
        raw=raw,
        cpu_svn=cpu_svn,
        misc_select=misc_select,
        isv_ext_prod_id=isv_ext_prod_id,
        attributes=attributes,
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        config_id=config_id,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=config_svn,
        isv_family_id=isv_family_id,
        report_data=report_data,
    )


def _parse_header(reader: _Reader) -> QuoteHeader:
    raw = reader.take(HEADER_SIZE, "header")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw)
    header = QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=raw[12:28],
        user_data=raw[28:48],
    )
    if tee_type == TEE_TYPE_TDX or version in (4, 5):
        kind = "TDX" if tee_type == TEE_TYPE_TDX else f"version {version}"
        raise UnsupportedQuoteError(
            f"unsupported quote: {kind} quotes are not supported yet "
            f"(version {version}, tee_type 0x{tee_type:02x}); only SGX quote version 3 is",
            check="quote.unsupported",
        )
    if version != QUOTE_VERSION_3:
        raise UnsupportedQuoteError(
            f"unsupported quote: unknown quote version {version}; only SGX quote version 3 is",
            check="quote.unsupported",
        )
    if tee_type != TEE_TYPE_SGX:
        raise UnsupportedQuoteError(
            f"unsupported quote: unknown TEE type 0x{tee_type:x}; only SGX (0x0) is supported",
            check="quote.unsupported",
        )
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        name = _KEY_TYPE_NAMES.get(key_type, "unknown")
        raise UnsupportedQuoteError(
            f"unsupported quote: attestation key type {key_type} ({name}); "
            "only type 2, ECDSA-256 with P-256, is supported",
            check="quote.unsupported",
        )
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise UnsupportedQuoteError(
            f"unsupported quote: QE vendor ID {header.qe_vendor_id.hex()} is not Intel's "
            f"({INTEL_QE_VENDOR_ID.hex()})",
            check="quote.unsupported",
        )
    return header


def _parse_certification_data(reader: _Reader, what: str) -> tuple[int, bytes]:
    cert_type = reader.u16(f"{what} type")
    size = reader.u32(f"{what} size")
    body = reader.sub(size, f"{what} size", what)
    return cert_type, body.take(size, what)


def _pem_chain(data: bytes) -> bytes:
    # Intel's quoting library NUL-terminates the PEM text inside the declared length.
    pem = data.rstrip(b"\x00")
    if not pem:
        raise QuoteFormatError(
            "malformed quote: the PCK certificate chain is empty", check="quote.format"
        )
    return pem


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX ECDSA quote v3, strictly. Raises :class:`QuoteFormatError` on any defect.

    Only the layout is checked here; no signature is verified.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise QuoteFormatError(
            f"malformed quote: expected bytes, got {type(data).__name__}", check="quote.format"
        )
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise QuoteFormatError(
            f"malformed quote: {len(data)} bytes is more than the {MAX_QUOTE_SIZE}-byte limit",
            check="quote.format",
        )
    reader = _Reader(data, "the quote")
    header = _parse_header(reader)
    report_body = parse_report_body(reader.take(REPORT_BODY_SIZE, "report body"))
    sig_len = reader.u32("signature data length")
    sig = reader.sub(sig_len, "signature data length", "the signature data")
    reader.expect_end()

    signature = sig.take(SIGNATURE_SIZE, "quote signature")
    attestation_key = sig.take(ATTESTATION_KEY_SIZE, "attestation key")
    qe_report_raw = sig.take(REPORT_BODY_SIZE, "QE report")
    qe_report_signature = sig.take(SIGNATURE_SIZE, "QE report signature")
    qe_auth_data = sig.take(sig.u16("QE auth data size"), "QE auth data")
    cert_type, cert_data = _parse_certification_data(sig, "certification data")
    sig.expect_end()

    if cert_type == CERT_DATA_QE_REPORT:
        # Type 6 carries the QE report, its signature and auth data again, then a type 5 chain.
        # They must repeat the outer fields exactly: two different QE reports in one quote
        # would leave it ambiguous which one was checked.
        inner = _Reader(cert_data, "the QE report certification data")
        if (
            inner.take(REPORT_BODY_SIZE, "inner QE report") != qe_report_raw
            or inner.take(SIGNATURE_SIZE, "inner QE report signature") != qe_report_signature
            or inner.take(inner.u16("inner QE auth data size"), "inner QE auth data")
            != qe_auth_data
        ):
            raise QuoteFormatError(
                "malformed quote: the QE report certification data (type 6) does not repeat "
                "the quote's QE report, QE report signature and QE auth data",
                check="quote.format",
            )
        cert_type, cert_data = _parse_certification_data(inner, "inner certification data")
        inner.expect_end()
        if cert_type != CERT_DATA_PCK_CHAIN:
            raise UnsupportedQuoteError(
                f"unsupported quote: certification data type 6 wraps type {cert_type}; "
                "only type 5 (PEM PCK certificate chain) is supported",
                check="quote.unsupported",
            )
        outer_type = CERT_DATA_QE_REPORT
    elif cert_type == CERT_DATA_PCK_CHAIN:
        outer_type = CERT_DATA_PCK_CHAIN
    else:
        raise UnsupportedQuoteError(
            f"unsupported quote: certification data type {cert_type}; only type 5 (PEM PCK "
            "certificate chain) and type 6 (QE report wrapping type 5) are supported",
            check="quote.unsupported",
        )

    return Quote(
        raw=data,
        header=header,
        report_body=report_body,
        signature=signature,
        attestation_key=attestation_key,
        qe_report=parse_report_body(qe_report_raw),
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        certification_data_type=outer_type,
        pck_chain_pem=_pem_chain(cert_data),
    )
