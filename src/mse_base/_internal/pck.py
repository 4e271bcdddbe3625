"""The SGX extensions of a PCK leaf certificate (OID 1.2.840.113741.1.13.1).

Structure from Intel's "SGX PCK Certificate and Certificate Revocation List Profile
Specification", section "Intel SGX PCK Certificate", as an ASN.1 SEQUENCE of (OID, value) pairs:

    .1 PPID (OCTET STRING 16)          .2 TCB (SEQUENCE: comp 1..16 INTEGER, .17 PCESVN, .18 CPUSVN)
    .3 PCE-ID (OCTET STRING 2)         .4 FMSPC (OCTET STRING 6)
    .5 SGX type (ENUMERATED)           .6 platform instance ID, .7 configuration (Platform CA only)

Each of .1 to .5 must appear exactly once; the DER is decoded strictly with asn1crypto.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import core
from cryptography import x509

from mse_base._internal.chain import extensions
from mse_base._internal.verify_errors import CertificateChainError

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSIONS_OID + ".1"
_TCB = SGX_EXTENSIONS_OID + ".2"
_PCE_ID = SGX_EXTENSIONS_OID + ".3"
_FMSPC = SGX_EXTENSIONS_OID + ".4"
_SGX_TYPE = SGX_EXTENSIONS_OID + ".5"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_COMP_SVN = {f"{_TCB}.{i}": i for i in range(1, 17)}


class _Entry(core.Sequence):  # type: ignore[misc]
    _fields = [("id", core.ObjectIdentifier), ("value", core.Any)]  # noqa: RUF012


class _Entries(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _Entry


class _SgxType(core.Enumerated):  # type: ignore[misc]
    _map = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}  # noqa: RUF012


@dataclass(frozen=True)
class PckExtensions:
    """The platform facts Intel's PCK CA certified for this CPU."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SVNs, component 1 first
    pcesvn: int
    cpusvn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: str


def _fail(why: str) -> CertificateChainError:
    return CertificateChainError(f"PCK certificate SGX extensions: {why}")


def _entries(der: bytes, what: str) -> dict[str, bytes]:
    """Map OID -> encoded value, refusing duplicates and trailing data."""
    try:
        parsed = _Entries.load(der, strict=True)
        out: dict[str, bytes] = {}
        for entry in parsed:
            oid = entry["id"].dotted
            if oid in out:
                raise _fail(f"{what} repeats {oid}")
            out[oid] = entry["value"].dump()
    except (ValueError, TypeError) as exc:
        raise _fail(f"{what} is not valid DER ({exc})") from None
    return out


def _load(cls: type[Any], der: bytes, oid: str) -> Any:
    try:
        value = cls.load(der, strict=True)
        return value.native
    except (ValueError, TypeError) as exc:
        raise _fail(f"{oid} is not a valid {cls.__name__} ({exc})") from None


def _octets(der: bytes, oid: str, size: int) -> bytes:
    value = _load(core.OctetString, der, oid)
    if not isinstance(value, bytes) or len(value) != size:
        raise _fail(f"{oid} must be {size} bytes")
    return value


def _integer(der: bytes, oid: str, limit: int) -> int:
    value = _load(core.Integer, der, oid)
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise _fail(f"{oid} = {value!r} is out of range 0..{limit}")
    return value


def _require(entries: dict[str, bytes], oid: str, name: str) -> bytes:
    try:
        return entries[oid]
    except KeyError:
        raise _fail(f"missing {name} ({oid})") from None


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Extract the SGX extensions of a PCK leaf certificate."""
    try:
        ext = extensions(cert, "PCK leaf").get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSIONS_OID))
    except x509.ExtensionNotFound:
        raise _fail(f"the PCK leaf has no SGX extension ({SGX_EXTENSIONS_OID})") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _fail("unexpected extension type")
    top = _entries(value.value, "the SGX extension")

    tcb = _entries(_require(top, _TCB, "TCB"), "the TCB entry")
    components = tuple(
        _integer(_require(tcb, oid, f"TCB component {i}"), oid, 255) for oid, i in _COMP_SVN.items()
    )
    pcesvn = _integer(_require(tcb, _PCESVN, "PCESVN"), _PCESVN, 0xFFFF)
    cpusvn = _octets(_require(tcb, _CPUSVN, "CPUSVN"), _CPUSVN, 16)
    unknown = set(tcb) - set(_COMP_SVN) - {_PCESVN, _CPUSVN}
    if unknown:
        raise _fail(f"unexpected TCB entries {sorted(unknown)}")

    sgx_type = _load(_SgxType, _require(top, _SGX_TYPE, "SGX type"), _SGX_TYPE)
    if not isinstance(sgx_type, str):
        raise _fail(f"unknown SGX type {sgx_type!r}")
    return PckExtensions(
        ppid=_octets(_require(top, _PPID, "PPID"), _PPID, 16),
        tcb_components=components,
        pcesvn=pcesvn,
        cpusvn=cpusvn,
        pce_id=_octets(_require(top, _PCE_ID, "PCE-ID"), _PCE_ID, 2),
        fmspc=_octets(_require(top, _FMSPC, "FMSPC"), _FMSPC, 6),
        sgx_type=sgx_type,
    )
