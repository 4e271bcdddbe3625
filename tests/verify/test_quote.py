"""The strict quote parser and the PCK certificate extensions, on the real quotes."""

from __future__ import annotations

import struct

import pytest
from cryptography import x509

from mse_base._internal.dcap.pck import parse_pck_extensions
from mse_base._internal.dcap.quote import CERT_DATA_QE_REPORT
from mse_base.verify import QuoteFormatError, UnsupportedQuoteError, Verifier, parse_quote

from .conftest import ANY_STATUS, CASES, collateral_of, quote_of, when

SGX_CASES = [c for c, exp in CASES.items() if exp["tee"] == "SGX"]

# From the shared README: PCK-cert TCB (pcesvn; components 1-8).
PCK_TCB = {
    "phala_sgx_v3": (13, (11, 11, 2, 2, 255, 1, 0, 0)),
    "automata_sgx_v3": (13, (14, 14, 3, 3, 255, 255, 1, 0)),
    "mobilecoin_sgx_v3": (13, (20, 20, 2, 4, 1, 128, 14, 0)),
    "cosmian_sgx_v3": (13, (7, 9, 3, 3, 255, 255, 1, 0)),
    "gramine_ratls": (13, (11, 11, 3, 3, 255, 255, 1, 0)),
}


@pytest.mark.parametrize("case", SGX_CASES)
def test_real_quote_fields(case: str) -> None:
    exp = CASES[case]
    quote = parse_quote(quote_of(case))
    assert quote.header.version == 3
    assert quote.header.attestation_key_type == 2
    assert quote.header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert quote.report_body.mr_enclave.hex() == exp["mrenclave"]
    assert quote.report_body.attributes[0] == 0x05
    assert quote.signed_bytes == quote.raw[:432]
    assert len(quote.attestation_key) == 64
    assert quote.qe_report.isv_prod_id == 1
    chain = x509.load_pem_x509_certificates(quote.pck_chain_pem)
    ext = parse_pck_extensions(chain[0])
    assert ext.fmspc.hex() == exp["fmspc"]
    assert ext.pce_id == b"\x00\x00"
    pcesvn, first_eight = PCK_TCB[case]
    assert (ext.pcesvn, ext.tcb_components[:8]) == (pcesvn, first_eight)
    assert ext.cpusvn == bytes(ext.tcb_components)
    assert len(ext.ppid) == 16
    assert ext.sgx_type in ("Standard", "Scalable")


def _with_header(quote: bytes, fmt: str, offset: int, value: int) -> bytes:
    data = bytearray(quote)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (0, "<H", 4, "version 4 quotes are not supported yet"),
        (0, "<H", 5, "version 5 quotes are not supported yet"),
        (0, "<H", 2, "unknown quote version 2"),
        (4, "<I", 0x81, "TDX quotes are not supported yet"),
        (4, "<I", 0x7, "unknown TEE type 0x7"),
        (2, "<H", 3, r"attestation key type 3 \(ECDSA-384"),
        (2, "<H", 9, "attestation key type 9"),
        (12, "<B", 0, "QE vendor ID"),
    ],
)
def test_unsupported_headers_are_refused_with_a_reason(
    offset: int, fmt: str, value: int, message: str
) -> None:
    with pytest.raises(UnsupportedQuoteError, match=message):
        parse_quote(_with_header(quote_of("automata_sgx_v3"), fmt, offset, value))


def _as_type6(quote: bytes, *, inner_type: int = 5, qe_report: bytes | None = None) -> bytes:
    """Rewrap a real quote's certification data as type 6 (QE report certification data)."""
    parsed = parse_quote(quote)
    auth_size = len(parsed.qe_auth_data)
    cert_at = 1014 + auth_size
    cert_type, cert_size = struct.unpack_from("<HI", quote, cert_at)
    assert cert_type == 5
    inner_cert = struct.pack("<HI", inner_type, cert_size) + quote[cert_at + 6 :]
    inner = (
        (qe_report if qe_report is not None else parsed.qe_report.raw)
        + parsed.qe_report_signature
        + struct.pack("<H", auth_size)
        + parsed.qe_auth_data
        + inner_cert
    )
    sig_data = quote[436:cert_at] + struct.pack("<HI", CERT_DATA_QE_REPORT, len(inner)) + inner
    return quote[:432] + struct.pack("<I", len(sig_data)) + sig_data


def test_type6_certification_data_verifies_like_type5() -> None:
    # Certification data is not under the quote signature, so the real quote can be rewrapped.
    wrapped = _as_type6(quote_of("automata_sgx_v3"))
    parsed = parse_quote(wrapped)
    assert parsed.certification_data_type == CERT_DATA_QE_REPORT
    assert parsed.pck_chain_pem == parse_quote(quote_of("automata_sgx_v3")).pck_chain_pem
    verifier = Verifier(collateral=collateral_of("automata_sgx_v3"), policy=ANY_STATUS)
    result = verifier.verify_quote(wrapped, at=when(CASES["automata_sgx_v3"]["verify_at"]))
    assert result.tcb_status == "SWHardeningNeeded"


def test_type6_with_a_different_inner_qe_report_is_refused() -> None:
    quote = quote_of("automata_sgx_v3")
    other = bytearray(parse_quote(quote).qe_report.raw)
    other[0] ^= 1
    with pytest.raises(QuoteFormatError, match="does not repeat"):
        parse_quote(_as_type6(quote, qe_report=bytes(other)))


def test_type6_wrapping_something_else_is_refused() -> None:
    with pytest.raises(UnsupportedQuoteError, match="wraps type 3"):
        parse_quote(_as_type6(quote_of("automata_sgx_v3"), inner_type=3))


def test_unknown_certification_data_type_is_refused() -> None:
    quote = bytearray(quote_of("automata_sgx_v3"))
    auth_size = struct.unpack_from("<H", quote, 1012)[0]
    struct.pack_into("<H", quote, 1014 + auth_size, 1)
    with pytest.raises(UnsupportedQuoteError, match="certification data type 1"):
        parse_quote(bytes(quote))
