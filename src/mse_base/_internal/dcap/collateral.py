"""Verification collateral: TCB info, QE identity, their issuer chain and the two CRLs.

The JSON documents are Intel PCS v4 response bodies,
``{"<key>":<signed text>,"signature":"<hex>"}``.
The signature (raw ECDSA P-256 ``r||s``, hex) covers the exact bytes of ``<signed text>``, so the
text is sliced out of the body, never re-serialized (Intel PCS API v4, "Get TCB Info": "signature
calculated over tcbInfo body without whitespaces", i.e. over the bytes as served).

Models: TCB info version 3 (``"id":"SGX"``) and QE identity version 2 (``"id":"QE"``), the versions
PCS v4 serves for SGX.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from mse_base._internal.dcap import chain
from mse_base._internal.dcap.errors import CollateralError
from mse_base._internal.files import InputRefused, read_limited
from mse_base.errors import FailedCheck, UsageError

_SIGNATURE_SUFFIX = re.compile(rb',"signature":"([0-9a-fA-F]{128})"\}\s*\Z')
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

# The most one collateral document (a JSON body, an issuer chain, a CRL) may hold, from a file or
# from the network. Intel's are a few kB to a few tens of kB (a TCB info with every level, the PCK
# CRL); 4 MiB leaves two orders of magnitude for CRLs to grow and still fits in memory at once.
MAX_DOCUMENT_SIZE = 4 * 1024 * 1024

TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)


@dataclass(frozen=True)
class Collateral:
    """Everything besides the quote that verification needs, as served by Intel PCS / a PCCS."""

    tcb_info: bytes
    qe_identity: bytes
    tcb_info_issuer_chain: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes
    root_ca_crl: bytes

    @classmethod
    def from_directory(cls, path: Path) -> Collateral:
        """Load a directory laid out like ``tests/data/sgx-quotes/<case>/``.

        Files: ``tcb_info.json``, ``qe_identity.json``, ``tcb_info_issuer_chain.pem``,
        ``pck_crl.der``, ``root_ca_crl.der`` and, if present, ``qe_identity_issuer_chain.pem``
        (else the TCB info issuer chain serves both: Intel signs both with the TCB signing cert).
        """
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"collateral directory {path}: not a directory")

        def read(name: str) -> bytes:
            try:
                return read_limited(path / name, MAX_DOCUMENT_SIZE)
            except InputRefused as exc:
                if exc.missing:
                    raise UsageError(
                        f"collateral directory {path}: {name} is missing; the directory needs "
                        "tcb_info.json, qe_identity.json, tcb_info_issuer_chain.pem, pck_crl.der "
                        "and root_ca_crl.der (from Intel PCS, your PCCS, or a simulation's "
                        "collateral/)"
                    ) from None
                raise UsageError(
                    f"collateral directory {path}: {name} {exc}; replace it with the file "
                    "Intel PCS or your PCCS serves"
                ) from None

        tcb_chain = read("tcb_info_issuer_chain.pem")
        qe_chain_path = path / "qe_identity_issuer_chain.pem"
        qe_chain = read(qe_chain_path.name) if qe_chain_path.exists() else tcb_chain
        return cls(
            tcb_info=read("tcb_info.json"),
            qe_identity=read("qe_identity.json"),
            tcb_info_issuer_chain=tcb_chain,
            qe_identity_issuer_chain=qe_chain,
            pck_crl=read("pck_crl.der"),
            root_ca_crl=read("root_ca_crl.der"),
        )

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: datetime) -> Collateral:
        """A fixed collateral is its own source (the FMSPC match is checked later)."""
        return self


class CollateralSource(Protocol):
    """Where a verifier gets collateral for a platform (a PCCS, a cache, a directory...)."""

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: datetime) -> Collateral:
        """Collateral for ``fmspc`` (hex) issued by the PCK ``pck_ca`` ("processor"|"platform")."""
        ...


# --- signed JSON -------------------------------------------------------------------------------

TCB_INFO_FORMAT: FailedCheck = "collateral.tcb_info.format"
QE_IDENTITY_FORMAT: FailedCheck = "collateral.qe_identity.format"
# The signed documents by their JSON key: name, and the checks their format and signature fail.
_DOCUMENTS: dict[str, tuple[str, FailedCheck, FailedCheck]] = {
    "tcbInfo": ("TCB info", TCB_INFO_FORMAT, "collateral.tcb_info.signature"),
    "enclaveIdentity": ("QE identity", QE_IDENTITY_FORMAT, "collateral.qe_identity.signature"),
}


def split_signed_json(raw: bytes, key: str) -> tuple[bytes, bytes]:
    """Return (signed text, raw r||s signature) of a ``{"<key>":...,"signature":"..."}`` body."""
    _, malformed, _ = _DOCUMENTS[key]
    prefix = b'{"' + key.encode() + b'":'
    if not raw.startswith(prefix):
        raise CollateralError(
            f"{key}: the document must start with {prefix.decode()}", check=malformed
        )
    cut = raw.rfind(b',"signature":"')
    match = _SIGNATURE_SUFFIX.match(raw, cut) if cut > len(prefix) else None
    if match is None:
        raise CollateralError(
            f'{key}: the document must end with ,"signature":"<128 hex digits>"}}',
            check=malformed,
        )
    return raw[len(prefix) : cut], bytes.fromhex(match.group(1).decode())


def verified_signed_text(raw: bytes, key: str, signer: x509.Certificate) -> bytes:
    """The signed text of a ``{"<key>":...,"signature":"..."}`` body whose signature verifies
    with ``signer``'s key (the TCB signing certificate)."""
    name, _, bad_signature = _DOCUMENTS[key]
    text, signature = split_signed_json(raw, key)
    public_key = chain.ec_p256_key(signer, "TCB signing certificate", chain.SIGNING_CHAIN)
    if not chain.verify_raw_ecdsa(public_key, signature, text):
        raise CollateralError(
            f"{name}: signature does not verify with the TCB signing cert", check=bad_signature
        )
    return text


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Runs for every object of the document (hundreds per TCB info), so the dict is built in C
    # and the keys are searched only when the sizes differ.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


@functools.lru_cache(maxsize=256)
def _utc_time(value: str) -> datetime:
    """``2025-01-31T00:00:00Z`` as an aware UTC datetime; ValueError otherwise.

    Memoised: the TCB levels of a document share a few dates, and each new TCB info or QE
    identity repeats most of the previous one's.
    """
    if not _TIME.fullmatch(value):
        raise ValueError(value)
    return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)


def load_json_object(text: bytes, what: str, check: FailedCheck) -> Mapping[str, Any]:
    try:
        value = json.loads(
            text.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise CollateralError(f"{what}: invalid JSON ({exc})", check=check) from None
    if not isinstance(value, dict):
        raise CollateralError(f"{what}: expected a JSON object", check=check)
    return value


class _Fields:
    """Typed access to a JSON object; every defect names the document and field, and fails
    ``check`` (the document's format check)."""

    def __init__(self, obj: Any, what: str, check: FailedCheck) -> None:
        if not isinstance(obj, dict):
            raise CollateralError(f"{what}: expected a JSON object", check=check)
        self._obj: dict[str, Any] = obj
        self._what = what
        self._check: FailedCheck = check

    def _get(self, name: str) -> Any:
        try:
            return self._obj[name]
        except KeyError:
            raise CollateralError(
                f"{self._what}: missing field {name!r}", check=self._check
            ) from None

    def integer(self, name: str, limit: int = 0xFFFF) -> int:
        value = self._get(name)
        if type(value) is not int or not 0 <= value <= limit:
            raise CollateralError(
                f"{self._what}: {name!r} must be an integer in 0..{limit}", check=self._check
            )
        return value

    def string(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise CollateralError(f"{self._what}: {name!r} must be a string", check=self._check)
        return value

    def hexbytes(self, name: str, size: int) -> bytes:
        value = self.string(name)
        if len(value) != 2 * size or not re.fullmatch(r"[0-9a-fA-F]*", value):
            raise CollateralError(
                f"{self._what}: {name!r} must be {size} bytes of hex", check=self._check
            )
        return bytes.fromhex(value)

    def timestamp(self, name: str) -> datetime:
        value = self.string(name)
        try:
            return _utc_time(value)
        except ValueError:
            raise CollateralError(
                f"{self._what}: {name!r} = {value!r} is not a UTC time like 2025-01-31T00:00:00Z",
                check=self._check,
            ) from None

    def array(self, name: str, *, optional: bool = False) -> list[Any]:
        if optional and name not in self._obj:
            return []
        value = self._get(name)
        if not isinstance(value, list):
            raise CollateralError(f"{self._what}: {name!r} must be a list", check=self._check)
        return value

    def member(self, name: str) -> _Fields:
        return _Fields(self._get(name), f"{self._what}.{name}", self._check)

    def status(self, name: str = "tcbStatus") -> str:
        value = self.string(name)
        if value not in TCB_STATUSES:
            raise CollateralError(f"{self._what}: unknown {name} {value!r}", check=self._check)
        return value

    def advisories(self) -> tuple[str, ...]:
        ids = self.array("advisoryIDs", optional=True)
        if not all(isinstance(i, str) for i in ids):
            raise CollateralError(
                f"{self._what}: 'advisoryIDs' must be a list of strings", check=self._check
            )
        return tuple(ids)


# --- TCB info v3 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcbLevel:
    """One platform TCB level: 16 SGX component SVNs, the PCE SVN and the status they earn."""

    components: tuple[int, ...]
    pcesvn: int
    tcb_date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TcbInfo:
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]


def _component_svns(components: list[Any], where: str) -> tuple[int, ...]:
    # The hot loop of TCB info parsing (16 per level, dozens of levels): kept flat.
    svns = []
    for component in components:
        svn = component.get("svn") if type(component) is dict else None
        if type(svn) is not int or not 0 <= svn <= 255:
            raise CollateralError(
                f"{where}: every sgxtcbcomponents entry needs an svn in 0..255",
                check=TCB_INFO_FORMAT,
            )
        svns.append(svn)
    return tuple(svns)


def parse_tcb_info(text: bytes) -> TcbInfo:
    """Parse the signed ``tcbInfo`` text (version 3, SGX)."""
    f = _Fields(load_json_object(text, "TCB info", TCB_INFO_FORMAT), "TCB info", TCB_INFO_FORMAT)
    if f.string("id") != "SGX":
        raise CollateralError(
            f"TCB info: id {f.string('id')!r} is not 'SGX'", check=TCB_INFO_FORMAT
        )
    if f.integer("version") != 3:
        raise CollateralError(
            f"TCB info: version {f.integer('version')} is not supported (only 3)",
            check=TCB_INFO_FORMAT,
        )
    tcb_type = f.integer("tcbType")
    if tcb_type != 0:
        raise CollateralError(
            f"TCB info: tcbType {tcb_type} is not supported (only 0)", check=TCB_INFO_FORMAT
        )
    levels = []
    for i, item in enumerate(f.array("tcbLevels")):
        lf = _Fields(item, f"TCB info.tcbLevels[{i}]", TCB_INFO_FORMAT)
        tcb = lf.member("tcb")
        comps = tcb.array("sgxtcbcomponents")
        if len(comps) != 16:
            raise CollateralError(
                f"TCB info.tcbLevels[{i}]: expected 16 sgxtcbcomponents", check=TCB_INFO_FORMAT
            )
        levels.append(
            TcbLevel(
                components=_component_svns(comps, f"TCB info.tcbLevels[{i}]"),
                pcesvn=tcb.integer("pcesvn"),
                tcb_date=lf.timestamp("tcbDate"),
                status=lf.status(),
                advisory_ids=lf.advisories(),
            )
        )
    if not levels:
        raise CollateralError("TCB info: no tcbLevels", check=TCB_INFO_FORMAT)
    # Matching takes the first level the platform reaches, so the order decides the verdict.
    # Intel serves the levels newest first; Intel's QVL does not rely on it and sorts them by
    # (components, PCESVN), highest first, refusing a level listed twice: so do we.
    levels.sort(key=lambda level: (level.components, level.pcesvn), reverse=True)
    for higher, lower in itertools.pairwise(levels):
        if (higher.components, higher.pcesvn) == (lower.components, lower.pcesvn):
            raise CollateralError(
                f"TCB info: the level with components {list(lower.components)} and PCESVN "
                f"{lower.pcesvn} is listed twice",
                check=TCB_INFO_FORMAT,
            )
    return TcbInfo(
        issue_date=f.timestamp("issueDate"),
        next_update=f.timestamp("nextUpdate"),
        fmspc=f.hexbytes("fmspc", 6),
        pce_id=f.hexbytes("pceId", 2),
        tcb_type=tcb_type,
        tcb_evaluation_data_number=f.integer("tcbEvaluationDataNumber", 2**32 - 1),
        levels=tuple(levels),
    )


# --- QE identity v2 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QeTcbLevel:
    isvsvn: int
    tcb_date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class QeIdentity:
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[QeTcbLevel, ...]


def parse_qe_identity(text: bytes) -> QeIdentity:
    """Parse the signed ``enclaveIdentity`` text (version 2, id "QE")."""
    f = _Fields(
        load_json_object(text, "QE identity", QE_IDENTITY_FORMAT), "QE identity", QE_IDENTITY_FORMAT
    )
    if f.string("id") != "QE":
        raise CollateralError(
            f"QE identity: id {f.string('id')!r} is not 'QE' (SGX quoting enclave)",
            check=QE_IDENTITY_FORMAT,
        )
    if f.integer("version") != 2:
        raise CollateralError(
            f"QE identity: version {f.integer('version')} is not supported (only 2)",
            check=QE_IDENTITY_FORMAT,
        )
    levels = []
    for i, item in enumerate(f.array("tcbLevels")):
        lf = _Fields(item, f"QE identity.tcbLevels[{i}]", QE_IDENTITY_FORMAT)
        levels.append(
            QeTcbLevel(
                isvsvn=lf.member("tcb").integer("isvsvn"),
                tcb_date=lf.timestamp("tcbDate"),
                status=lf.status(),
                advisory_ids=lf.advisories(),
            )
        )
    if not levels:
        raise CollateralError("QE identity: no tcbLevels", check=QE_IDENTITY_FORMAT)
    return QeIdentity(
        issue_date=f.timestamp("issueDate"),
        next_update=f.timestamp("nextUpdate"),
        tcb_evaluation_data_number=f.integer("tcbEvaluationDataNumber", 2**32 - 1),
        # The hex is the report's 4 MISCSELECT bytes in memory order, i.e. little-endian, as
        # the report body stores it (Intel QVL EnclaveReportVerifier; dcap-qvl from_le_bytes).
        miscselect=int.from_bytes(f.hexbytes("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(f.hexbytes("miscselectMask", 4), "little"),
        attributes=f.hexbytes("attributes", 16),
        attributes_mask=f.hexbytes("attributesMask", 16),
        mrsigner=f.hexbytes("mrsigner", 32),
        isvprodid=f.integer("isvprodid"),
        levels=tuple(levels),
    )
