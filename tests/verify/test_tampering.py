"""Every byte that matters is checked: a flipped byte anywhere in a quote or its collateral fails.

Each variant must raise VerificationError (never another exception, never a pass).
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from mse_base._internal.dcap.quote import MAX_QUOTE_SIZE
from mse_base.errors import VerificationError
from mse_base.verify import Collateral, QuoteFormatError, Verifier, parse_quote

from .conftest import ANY_STATUS, CASES, collateral_of, quote_of, when

CASE = "automata_sgx_v3"
AT = when(CASES[CASE]["verify_at"])


def _regions(quote: bytes) -> dict[str, range]:
    auth_size = struct.unpack_from("<H", quote, 1012)[0]
    cert_type_at = 1014 + auth_size
    cert_size = struct.unpack_from("<I", quote, cert_type_at + 2)[0]
    regions = {
        "header": range(0, 48),
        "report body": range(48, 432),
        "signature data length": range(432, 436),
        "quote signature": range(436, 500),
        "attestation key": range(500, 564),
        "QE report": range(564, 948),
        "QE report signature": range(948, 1012),
        "QE auth data size": range(1012, 1014),
        "QE auth data": range(1014, cert_type_at),
        "certification data type and size": range(cert_type_at, cert_type_at + 6),
        "certification data (PCK chain)": range(cert_type_at + 6, cert_type_at + 6 + cert_size),
    }
    assert cert_type_at + 6 + cert_size == len(quote)
    return regions


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    v = Verifier(collateral=collateral_of(CASE), policy=ANY_STATUS)
    assert v.verify_quote(quote_of(CASE), at=AT).tcb_status == "SWHardeningNeeded"
    return v


@pytest.mark.parametrize("region", list(_regions(quote_of(CASE))))
def test_flipped_quote_byte_is_rejected(verifier: Verifier, region: str) -> None:
    quote = quote_of(CASE)
    span = _regions(quote)[region]
    assert len(span) > 0
    for offset in span:
        for mask in (0x01, 0x80):
            tampered = bytearray(quote)
            tampered[offset] ^= mask
            with pytest.raises(VerificationError):
                verifier.verify_quote(bytes(tampered), at=AT)
    # The untampered quote still passes with the same (cached) verifier.
    verifier.verify_quote(quote, at=AT)


def test_every_truncation_is_a_format_error() -> None:
    quote = quote_of(CASE)
    for size in range(len(quote)):
        with pytest.raises(QuoteFormatError):
            parse_quote(quote[:size])


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 70, b"garbage", b"\x00" * MAX_QUOTE_SIZE])
def test_trailing_bytes_are_rejected(extra: bytes) -> None:
    with pytest.raises(QuoteFormatError):
        parse_quote(quote_of(CASE) + extra)


def test_length_fields_cannot_reach_outside_the_buffer() -> None:
    quote = quote_of(CASE)
    for offset, fmt in ((432, "<I"), (1012, "<H")):
        for value in (0, 1, 0xFFFF, 0xFFFFFFFF if fmt == "<I" else 0xFFFF):
            tampered = bytearray(quote)
            struct.pack_into(fmt, tampered, offset, value)
            with pytest.raises(QuoteFormatError):
                parse_quote(bytes(tampered))


def test_random_mutations_never_escape_as_other_exceptions(verifier: Verifier) -> None:
    rng = random.Random(20261126)
    base = quote_of(CASE)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and pos < len(data):
                data[pos] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 16))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 64)]
            else:
                data = data[:pos]
        if bytes(data) == base:
            continue
        with pytest.raises(VerificationError):
            verifier.verify_quote(bytes(data), at=AT)


def test_non_bytes_input_is_a_format_error() -> None:
    with pytest.raises(QuoteFormatError):
        parse_quote("not bytes")  # type: ignore[arg-type]


FIELDS = [f.name for f in dataclasses.fields(Collateral)]


@pytest.mark.parametrize("field", FIELDS)
def test_flipped_collateral_byte_is_rejected(field: str) -> None:
    original = collateral_of(CASE)
    quote = quote_of(CASE)
    data = getattr(original, field)
    # Every byte of the small items; for the long JSON texts every byte of the framing and the
    # signature plus a dense sample of the signed text (all of it would take minutes).
    if field in ("tcb_info", "qe_identity"):
        offsets = sorted(
            {*range(0, 40), *range(len(data) - 160, len(data)), *range(0, len(data), 3)}
        )
    else:
        offsets = list(range(len(data)))
    for offset in offsets:
        tampered = bytearray(data)
        tampered[offset] ^= 0x01
        collateral = dataclasses.replace(original, **{field: bytes(tampered)})
        verifier = Verifier(collateral=collateral, policy=ANY_STATUS)
        with pytest.raises(VerificationError):
            verifier.verify_quote(quote, at=AT)


def test_truncated_collateral_is_rejected() -> None:
    original = collateral_of(CASE)
    quote = quote_of(CASE)
    for field in FIELDS:
        data = getattr(original, field)
        for size in (0, 1, len(data) // 2, len(data) - 1):
            collateral = dataclasses.replace(original, **{field: data[:size]})
            with pytest.raises(VerificationError):
                Verifier(collateral=collateral, policy=ANY_STATUS).verify_quote(quote, at=AT)


def test_collateral_from_another_platform_is_rejected() -> None:
    # phala's TCB info is validly signed by Intel but for FMSPC 00a067110000.
    mixed = dataclasses.replace(
        collateral_of(CASE), tcb_info=collateral_of("phala_sgx_v3").tcb_info
    )
    with pytest.raises(VerificationError, match="FMSPC"):
        Verifier(collateral=mixed, policy=ANY_STATUS).verify_quote(
            quote_of(CASE), at=when("2025-07-01T00:00:00Z")
        )


def test_pck_crl_of_the_other_ca_is_rejected() -> None:
    # phala's PCK CRL is the Processor CA's; automata's leaf comes from the Platform CA.
    mixed = dataclasses.replace(collateral_of(CASE), pck_crl=collateral_of("phala_sgx_v3").pck_crl)
    with pytest.raises(VerificationError, match="PCK CRL"):
        Verifier(collateral=mixed, policy=ANY_STATUS).verify_quote(quote_of(CASE), at=AT)
