"""Strictness of the PCK SGX-extension decoder, on certificates built here with crafted DER."""

from __future__ import annotations

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap.pck import SGX_EXTENSIONS_OID, parse_pck_extensions
from mse_base.verify import CertificateChainError
from tests.certs import with_extensions

_KEY = ec.generate_private_key(ec.SECP256R1())


def _tlv(tag: int, contents: bytes) -> bytes:
    if len(contents) < 0x80:
        length = bytes([len(contents)])
    elif len(contents) < 0x100:
        length = bytes([0x81, len(contents)])
    else:
        length = bytes([0x82]) + len(contents).to_bytes(2, "big")
    return bytes([tag]) + length + contents


def _oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def _pair(oid: str, value: bytes) -> bytes:
    return _tlv(0x30, _oid(oid) + value)


def _int(value: int) -> bytes:
    return bytes(core.Integer(value).dump())


def _octets(value: bytes) -> bytes:
    return _tlv(0x04, value)


def _extension(*, drop: str = "", extra: bytes = b"", tcb_comp_1: bytes | None = None) -> bytes:
    base = SGX_EXTENSIONS_OID
    tcb_entries = [
        _pair(f"{base}.2.{i}", tcb_comp_1 if (i == 1 and tcb_comp_1) else _int(i))
        for i in range(1, 17)
    ]
    tcb_entries += [_pair(f"{base}.2.17", _int(13)), _pair(f"{base}.2.18", _octets(bytes(16)))]
    entries = {
        "ppid": _pair(f"{base}.1", _octets(bytes(16))),
        "tcb": _pair(f"{base}.2", _tlv(0x30, b"".join(tcb_entries))),
        "pceid": _pair(f"{base}.3", _octets(b"\x00\x00")),
        "fmspc": _pair(f"{base}.4", _octets(bytes.fromhex("00606a000000"))),
        "sgxtype": _pair(f"{base}.5", _tlv(0x0A, b"\x01")),
    }
    return _tlv(0x30, b"".join(v for k, v in entries.items() if k != drop) + extra)


def _cert(extension: bytes) -> x509.Certificate:
    return with_extensions(_KEY, [(SGX_EXTENSIONS_OID, extension)])


def test_well_formed_extension_decodes() -> None:
    ext = parse_pck_extensions(_cert(_extension()))
    assert ext.tcb_components == tuple(range(1, 17))
    assert ext.pcesvn == 13
    assert ext.fmspc.hex() == "00606a000000"
    assert ext.sgx_type == "Scalable"


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        (_extension(drop="fmspc"), "missing FMSPC"),
        (_extension(drop="tcb"), "missing TCB"),
        (_extension(extra=_pair(SGX_EXTENSIONS_OID + ".4", _octets(bytes(6)))), "repeats"),
        (_extension(tcb_comp_1=_int(256)), "out of range"),
        (_extension(tcb_comp_1=_int(-1)), "out of range"),
        (_extension(tcb_comp_1=b"\x02\x02\x00\x05"), "not a DER integer"),
        (_extension(tcb_comp_1=b"\x02\x81\x01\x05"), "not DER"),
        (_extension(tcb_comp_1=_octets(b"\x05")), "wrong ASN.1 type"),
        (_extension() + b"\x05\x00", "exactly one SEQUENCE"),
        (_extension() + b"\x00", "not valid DER"),
        (_extension()[:-1], "not valid DER"),
    ],
)
def test_malformed_extension_is_refused(extension: bytes, message: str) -> None:
    with pytest.raises(CertificateChainError, match=message):
        parse_pck_extensions(_cert(extension))


def test_certificate_without_the_extension_is_refused() -> None:
    cert = with_extensions(_KEY, [])
    with pytest.raises(CertificateChainError, match="no SGX extension"):
        parse_pck_extensions(cert)
