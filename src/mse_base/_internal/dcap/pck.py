"""The SGX extensions of a PCK leaf certificate (OID 1.2.840.113741.1.13.1).

Structure from Intel's "SGX PCK Certificate and Certificate Revocation List Profile
Specification", section "Intel SGX PCK Certificate", as an ASN.1 SEQUENCE of (OID, value) pairs:

    .1 PPID (OCTET STRING 16)          .2 TCB (SEQUENCE: comp 1..16 INTEGER, .17 PCESVN, .18 CPUSVN)
    .3 PCE-ID (OCTET STRING 2)         .4 FMSPC (OCTET STRING 6)
    .5 SGX type (ENUMERATED)           .6 platform instance ID, .7 configuration (Platform CA only)

Each of .1 to .5 must appear exactly once, each TCB entry too. The values are read with
asn1crypto's DER tokenizer (:func:`asn1crypto.parser.parse`) plus the DER rules it leaves to the
caller (definite, minimal lengths; minimal integers). Its schema classes would do the same work
about ten times slower, and this runs once per PCK certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core, parser
from cryptography import x509

from mse_base._internal.dcap.chain import extensions
from mse_base._internal.dcap.errors import CertificateChainError

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSIONS_OID + ".1"
_TCB = SGX_EXTENSIONS_OID + ".2"
_PCE_ID = SGX_EXTENSIONS_OID + ".3"
_FMSPC = SGX_EXTENSIONS_OID + ".4"
_SGX_TYPE = SGX_EXTENSIONS_OID + ".5"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_COMP_SVN = {f"{_TCB}.{i}": i for i in range(1, 17)}
# OID DER contents -> dotted form, for the OIDs we read.
_KNOWN_OIDS = {
    core.ObjectIdentifier(oid).contents: oid
    for oid in (_PPID, _TCB, _PCE_ID, _FMSPC, _SGX_TYPE, _PCESVN, _CPUSVN, *_COMP_SVN)
}
_SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}

# Universal tags.
_INTEGER, _OCTET_STRING, _OID, _ENUMERATED, _SEQUENCE = 2, 4, 6, 10, 16
# (class, constructed, tag) of a universal SEQUENCE and OBJECT IDENTIFIER.
_SEQUENCE_TYPE = (0, 1, _SEQUENCE)
_OID_TYPE = (0, 0, _OID)


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
    return CertificateChainError(f"PCK certificate SGX extensions: {why}", check="pck.extensions")


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return _SHORT_LENGTHS[size]
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


_SHORT_LENGTHS = tuple(bytes([size]) for size in range(0x80))


# A DER value as (class, method, tag, contents).
_Tlv = tuple[int, int, int, bytes]


def _read(data: bytes, what: str) -> list[_Tlv]:
    """The DER values concatenated in ``data`` (one level; contents are not descended into)."""
    # About 70 values per certificate: locals and no per-value helper calls on the good path.
    values = []
    parse = parser.parse
    while data:
        try:
            cls, method, tag, header, contents, trailer = parse(data)
        except (ValueError, TypeError) as exc:
            raise _fail(f"{what} is not valid DER ({exc})") from None
        size = len(contents)
        # parser.parse accepts BER; DER needs a definite, minimally encoded length.
        if trailer or header[1:] != (_SHORT_LENGTHS[size] if size < 0x80 else _der_length(size)):
            raise _fail(f"{what} is not DER (length encoding)")
        values.append((cls, method, tag, contents))
        data = data[len(header) + size :]
    return values


def _expect(value: _Tlv, tag: int, what: str) -> bytes:
    if value[:3] != (0, int(tag == _SEQUENCE), tag):
        raise _fail(f"{what} has the wrong ASN.1 type")
    return value[3]


def _entries(value: _Tlv, what: str) -> dict[str, _Tlv]:
    """Map OID -> value of a SEQUENCE OF SEQUENCE {OID, value}; no duplicates."""
    out: dict[str, _Tlv] = {}
    for cls, method, tag, pair_der in _read(_expect(value, _SEQUENCE, what), what):
        # _expect inlined, with the messages built only on failure: this runs for every entry.
        if (cls, method, tag) != _SEQUENCE_TYPE:
            raise _fail(f"an entry of {what} has the wrong ASN.1 type")
        pair = _read(pair_der, what)
        if len(pair) != 2:
            raise _fail(f"an entry of {what} is not an (OID, value) pair")
        if pair[0][:3] != _OID_TYPE:
            raise _fail(f"an OID in {what} has the wrong ASN.1 type")
        oid_der = pair[0][3]
        oid = _KNOWN_OIDS.get(oid_der)
        if oid is None:
            try:
                oid = core.ObjectIdentifier(contents=oid_der).dotted
            except (ValueError, TypeError) as exc:
                raise _fail(f"an OID in {what} is not valid ({exc})") from None
        if oid in out:
            raise _fail(f"{what} repeats {oid}")
        out[oid] = pair[1]
    return out


def _unsigned(value: _Tlv, oid: str, limit: int, tag: int = _INTEGER) -> int:
    contents = _expect(value, tag, oid)
    # DER integers are minimal: no leading 0x00 unless the next bit is set, never empty.
    if not contents or (len(contents) > 1 and contents[0] == 0 and contents[1] < 0x80):
        raise _fail(f"{oid} is not a DER integer")
    number = int.from_bytes(contents, "big", signed=True)
    if not 0 <= number <= limit:
        raise _fail(f"{oid} = {number} is out of range 0..{limit}")
    return number


def _octets(value: _Tlv, oid: str, size: int) -> bytes:
    contents = _expect(value, _OCTET_STRING, oid)
    if len(contents) != size:
        raise _fail(f"{oid} must be {size} bytes")
    return contents


def _require(entries: dict[str, _Tlv], oid: str, name: str) -> _Tlv:
    try:
        return entries[oid]
    except KeyError:
        raise _fail(f"missing {name} ({oid})") from None


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Extract the SGX extensions of a PCK leaf certificate."""
    try:
        ext = extensions(cert, "PCK leaf", "pck.extensions").get_extension_for_oid(
            x509.ObjectIdentifier(SGX_EXTENSIONS_OID)
        )
    except x509.ExtensionNotFound:
        raise _fail(f"the PCK leaf has no SGX extension ({SGX_EXTENSIONS_OID})") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _fail("unexpected extension type")
    outer = _read(value.value, "the SGX extension")
    if len(outer) != 1:
        raise _fail("the SGX extension must hold exactly one SEQUENCE")
    top = _entries(outer[0], "the SGX extension")

    tcb = _entries(_require(top, _TCB, "TCB"), "the TCB entry")
    components = tuple(
        _unsigned(_require(tcb, oid, f"TCB component {i}"), oid, 255)
        for oid, i in _COMP_SVN.items()
    )
    pcesvn = _unsigned(_require(tcb, _PCESVN, "PCESVN"), _PCESVN, 0xFFFF)
    cpusvn = _octets(_require(tcb, _CPUSVN, "CPUSVN"), _CPUSVN, 16)
    unknown = set(tcb) - set(_COMP_SVN) - {_PCESVN, _CPUSVN}
    if unknown:
        raise _fail(f"unexpected TCB entries {sorted(unknown)}")

    sgx_type = _unsigned(_require(top, _SGX_TYPE, "SGX type"), _SGX_TYPE, 255, _ENUMERATED)
    if sgx_type not in _SGX_TYPES:
        raise _fail(f"unknown SGX type {sgx_type}")
    return PckExtensions(
        ppid=_octets(_require(top, _PPID, "PPID"), _PPID, 16),
        tcb_components=components,
        pcesvn=pcesvn,
        cpusvn=cpusvn,
        pce_id=_octets(_require(top, _PCE_ID, "PCE-ID"), _PCE_ID, 2),
        fmspc=_octets(_require(top, _FMSPC, "FMSPC"), _FMSPC, 6),
        sgx_type=_SGX_TYPES[sgx_type],
    )
