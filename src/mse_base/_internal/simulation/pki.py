"""The simulation quote source: a local PKI that stands in for Intel's, and a quote builder.

Without SGX hardware the product still runs the whole pipeline; only the quote comes from here.
Every artefact is structurally genuine so the verifier runs exactly the checks it runs on real
quotes:

* a simulation root CA (``ca.pem``, the file a verifier is given), a simulation PCK CA, and a PCK
  leaf carrying Intel's SGX extensions (``1.2.840.113741.1.13.1``: PPID, TCB components with
  PCESVN and CPUSVN, PCE-ID, FMSPC, SGX type), laid out as in Intel's PCK certificates;
* a TCB signing certificate and collateral in the layout of ``shared/sgx-quotes/<case>/``: TCB
  info v3 with one ``UpToDate`` level matching the PCK leaf, QE identity v2, the issuer chain, and
  real (empty) CRLs from both CAs, re-issued when they approach ``nextUpdate`` (keys are kept);
* quotes v3 (ECDSA-P256 attestation key, Intel's QE vendor id, certification data type 5) whose
  QE report is signed by the PCK leaf key and binds the attestation key as Intel's QE does, with
  the QE authentication data that says which measurement the quote carries: the simulated one
  (``mse-run --simulation``), or the real one (``DIRECT_MEASUREMENT_MARK``, ``mse-run --direct``).

Nothing here is trusted by default: every subject says ``MSE SIMULATION — NOT SGX`` and only a
verifier explicitly handed ``ca.pem`` accepts these quotes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from mse_base._internal.dcap.chain import SIMULATION_MARK
from mse_base._internal.dcap.collateral import MAX_DOCUMENT_SIZE
from mse_base._internal.dcap.pck import SGX_EXTENSIONS_OID
from mse_base._internal.dcap.quote import (
    ATTESTATION_KEY_ECDSA_P256,
    CERT_DATA_PCK_CHAIN,
    DIRECT_MEASUREMENT_MARK,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION_3,
    REPORT_DATA_SIZE,
)
from mse_base._internal.enclave.sigstruct import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT
from mse_base._internal.files import (
    InputRefused,
    private_key_pem,
    read_limited,
    write_atomic,
    write_private,
)
from mse_base._internal.utc import iso
from mse_base.errors import EnvironmentMissing

__all__ = [
    "SIMULATION_FMSPC",
    "QuotingEnclave",
    "SimulationPKI",
    "SimulationQuoteProvider",
    "ensure_simulation_pki",
    "refresh_collateral",
    "simulation_dir",
    "simulation_pki_exists",
]

# "MSESIM" in ASCII: an FMSPC no Intel platform uses, so simulation collateral can never be
# mistaken for (or looked up as) a real platform's.
SIMULATION_FMSPC = "4d534553494d"
SIMULATION_PCE_ID = "0000"
# The simulated platform: CPUSVN components 1..16 and PCESVN, shaped like a real Icelake part.
SIMULATION_TCB_COMPONENTS = (14, 14, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
SIMULATION_PCESVN = 13
SIMULATION_TCB_DATE = "2024-03-13T00:00:00Z"
SIMULATION_TCB_EVALUATION_DATA_NUMBER = 17

# The simulated quoting enclave, as QE identity v2 describes Intel's (attributes 0x15 = INIT |
# MODE64BIT | PROVISIONKEY, xfrm 0xe7; the mask ignores MODE64BIT).
QE_MRENCLAVE = hashlib.sha256(b"mse-base simulation quoting enclave").digest()
QE_MRSIGNER = hashlib.sha256(b"mse-base simulation quoting enclave signer").digest()
QE_ISV_PROD_ID = 1
QE_ISV_SVN = 8
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
QE_IDENTITY_ATTRIBUTES = "11000000000000000000000000000000"
QE_IDENTITY_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"
# Intel's QE puts these 32 bytes in its authentication data; any value works, the QE report
# binds it. The quoting enclave of mse-run --direct certifies DIRECT_MEASUREMENT_MARK instead.
QE_AUTH_DATA = bytes(range(32))

# xfrm as Gramine enclaves get it.
_XFRM = 0xE7

COLLATERAL_LIFETIME = dt.timedelta(days=30)
# Collateral is re-issued once less than this remains before nextUpdate.
COLLATERAL_REFRESH_MARGIN = dt.timedelta(days=7)
CERT_LIFETIME = dt.timedelta(days=3650)
# Back-date notBefore / issueDate a little so a verifier whose clock lags ours still accepts.
_CLOCK_SKEW = dt.timedelta(minutes=5)

_CA_KEY = "ca.key"
_CA_CERT = "ca.pem"
_PCK_CA_KEY = "pck_ca.key"
_PCK_CA_CERT = "pck_ca.pem"
_PCK_KEY = "pck.key"
_PCK_CERT = "pck.pem"
_TCB_KEY = "tcb_signing.key"
_TCB_CERT = "tcb_signing.pem"
_ATT_KEY = "attestation.key"
_COLLATERAL = "collateral"
_LOCK = ".lock"
# The most a key or certificate file of the PKI may hold: each is a P-256 key or certificate of
# under 1 kB, so anything near 64 KiB was not written by us.
_MAX_FILE = 64 * 1024


def simulation_dir() -> Path:
    """Where the simulation PKI lives: ``$XDG_CONFIG_HOME/mse/simulation`` (XDG default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "mse" / "simulation"


# --- small file helpers ---------------------------------------------------------------------


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(path, private_key_pem(key))


def _recreate(directory: Path) -> str:
    return f"delete {directory} to recreate the simulation PKI"


def _read(path: Path, *, private: bool = False) -> bytes:
    """A file of the PKI: regular, bounded (a FIFO or device planted here cannot hang us)."""
    try:
        return read_limited(path, _MAX_FILE, private=private, nofollow=private)
    except InputRefused as err:
        raise EnvironmentMissing(f"{path} {err}; {_recreate(path.parent)}") from None


def _read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read(path, private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise EnvironmentMissing(
            f"{path} is not a PEM private key; {_recreate(path.parent)}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnvironmentMissing(f"{path} is not an EC private key; {_recreate(path.parent)}")
    return key


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# fcntl record locks belong to the process, not the descriptor: threads of one process share
# them, so this lock serialises the threads first.
_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise creation and refresh between processes and threads.

    An fcntl record lock (``lockf``), not ``flock``: Gramine's LibOS implements the former and
    answers the latter with ENOSYS, and this code may run inside it.
    """
    with _THREAD_LOCK:
        fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            os.close(fd)


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256/SHA-256 as SGX and the PCS JSON use it: 64 bytes, ``r || s`` big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- certificates ---------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mse-base simulation"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SIMULATION_MARK),
        ]
    )


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    role: str,
    *,
    issuer: _Issued | None,
    ca: bool,
    path_length: int | None = None,
    extra: list[x509.ExtensionType] | None = None,
    now: dt.datetime,
) -> _Issued:
    """A new P-256 key and its certificate for ``role``, signed by ``issuer`` (None: by itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    subject = _name(f"{SIMULATION_MARK} {role}")
    issuer_name, issuer_key = (
        (subject, key) if issuer is None else (issuer.cert.subject, issuer.key)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return _Issued(builder.sign(issuer_key, hashes.SHA256()), key)


class _SgxExtension(core.Sequence):  # type: ignore[misc]
    _fields = [("sgx_type", core.ObjectIdentifier), ("value", core.Any)]  # noqa: RUF012


class _SgxExtensions(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _SgxExtension


class _SgxType(core.Enumerated):  # type: ignore[misc]
    _map = {0: "standard", 1: "scalable", 2: "scalable_with_integrity"}  # noqa: RUF012


def _sgx_oid(*arcs: int) -> str:
    return ".".join([SGX_EXTENSIONS_OID, *map(str, arcs)])


def _sgx_entry(oid: str, value: core.Asn1Value) -> _SgxExtension:
    return _SgxExtension({"sgx_type": oid, "value": core.Any.load(value.dump())})


def sgx_extensions_der(*, ppid: bytes) -> bytes:
    """The DER value of the PCK leaf's SGX extension, with the simulated platform TCB.

    Structure (Intel SGX PCK Certificate and CRL Profile, "SGX Extensions"): a SEQUENCE of
    (OID, value) pairs: PPID, TCB (SVN of components 1..16, PCESVN, CPUSVN), PCE-ID, FMSPC and
    SGX type, in the order Intel's certificates use.
    """
    tcb = _SgxExtensions(
        [
            _sgx_entry(_sgx_oid(2, n), core.Integer(svn))
            for n, svn in enumerate(SIMULATION_TCB_COMPONENTS, start=1)
        ]
        + [
            _sgx_entry(_sgx_oid(2, 17), core.Integer(SIMULATION_PCESVN)),
            _sgx_entry(_sgx_oid(2, 18), core.OctetString(bytes(SIMULATION_TCB_COMPONENTS))),
        ]
    )
    entries = _SgxExtensions(
        [
            _sgx_entry(_sgx_oid(1), core.OctetString(ppid)),
            _sgx_entry(_sgx_oid(2), tcb),
            _sgx_entry(_sgx_oid(3), core.OctetString(bytes.fromhex(SIMULATION_PCE_ID))),
            _sgx_entry(_sgx_oid(4), core.OctetString(bytes.fromhex(SIMULATION_FMSPC))),
            _sgx_entry(_sgx_oid(5), _SgxType("standard")),
        ]
    )
    return bytes(entries.dump())


# --- collateral -----------------------------------------------------------------------------


def _signed_json(
    key_name: str, body: dict[str, object], signer: ec.EllipticCurvePrivateKey
) -> bytes:
    """``{"<key>":<body>,"signature":"<hex r||s>"}`` with the signature over the exact text."""
    text = json.dumps(body, separators=(",", ":"))
    signature = _raw_signature(signer, text.encode())
    return f'{{"{key_name}":{text},"signature":"{signature.hex()}"}}'.encode()


def _validity(now: dt.datetime) -> dict[str, str]:
    """TCB info and QE identity issued at ``now`` share one validity window (as the CRLs do)."""
    return {
        "issueDate": iso(now - _CLOCK_SKEW),
        "nextUpdate": iso(now - _CLOCK_SKEW + COLLATERAL_LIFETIME),
    }


def _tcb_info(now: dt.datetime) -> dict[str, object]:
    return {
        "id": "SGX",
        "version": 3,
        **_validity(now),
        "fmspc": SIMULATION_FMSPC,
        "pceId": SIMULATION_PCE_ID,
        "tcbType": 0,
        "tcbEvaluationDataNumber": SIMULATION_TCB_EVALUATION_DATA_NUMBER,
        "tcbLevels": [
            {
                "tcb": {
                    "sgxtcbcomponents": [{"svn": svn} for svn in SIMULATION_TCB_COMPONENTS],
                    "pcesvn": SIMULATION_PCESVN,
                },
                "tcbDate": SIMULATION_TCB_DATE,
                "tcbStatus": "UpToDate",
            }
        ],
    }


def _qe_identity(now: dt.datetime) -> dict[str, object]:
    return {
        "id": "QE",
        "version": 2,
        **_validity(now),
        "tcbEvaluationDataNumber": SIMULATION_TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": QE_IDENTITY_ATTRIBUTES,
        "attributesMask": QE_IDENTITY_ATTRIBUTES_MASK,
        "mrsigner": QE_MRSIGNER.hex().upper(),
        "isvprodid": QE_ISV_PROD_ID,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": QE_ISV_SVN},
                "tcbDate": SIMULATION_TCB_DATE,
                "tcbStatus": "UpToDate",
            }
        ],
    }


def _empty_crl(
    issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(now - _CLOCK_SKEW + COLLATERAL_LIFETIME)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


# --- the PKI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationPKI:
    """The simulation PKI on disk. Keys are read on first use, never logged."""

    directory: Path

    @property
    def ca_pem_path(self) -> Path:
        """The simulation root CA certificate: what a verifier is given as trust root."""
        return self.directory / _CA_CERT

    @property
    def collateral_dir(self) -> Path:
        """Collateral in the layout :meth:`Collateral.from_directory` reads."""
        return self.directory / _COLLATERAL

    @cached_property
    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(_read(self.ca_pem_path))

    @cached_property
    def pck_chain_pem(self) -> bytes:
        """Leaf, PCK CA, root: the certification data (type 5) of every quote."""
        return b"".join(
            _read(self.directory / name) for name in (_PCK_CERT, _PCK_CA_CERT, _CA_CERT)
        )

    @cached_property
    def _pck_key(self) -> ec.EllipticCurvePrivateKey:
        return _read_private_key(self.directory / _PCK_KEY)

    @cached_property
    def _attestation_key(self) -> ec.EllipticCurvePrivateKey:
        return _read_private_key(self.directory / _ATT_KEY)

    def sign_qe_report(self, qe_report: bytes) -> bytes:
        return _raw_signature(self._pck_key, qe_report)

    def sign_with_attestation_key(self, data: bytes) -> bytes:
        return _raw_signature(self._attestation_key, data)

    @cached_property
    def attestation_public_key(self) -> bytes:
        """The attestation key as the quote carries it: ``x || y``, 64 bytes."""
        return _raw_public_key(self._attestation_key)

    def quoting_enclave(
        self,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
        *,
        real_measurement: bool = False,
    ) -> QuotingEnclave:
        """The simulated quoting enclave: an attestation key and the QE report that certifies it.

        As Intel's QE does, the QE report (signed by the PCK key) binds the attestation key and
        the QE authentication data in its report data, so whoever holds the result signs quotes
        without the PCK key and cannot change what it certifies. Given a fresh
        ``attestation_key`` and ``real_measurement``, that is what ``mse-run --direct`` hands
        its enclave: the authentication data is then :data:`DIRECT_MEASUREMENT_MARK`, which
        tells a verifier trusting this PKI that the quoted MRENCLAVE is the real one; otherwise
        (``mse-run --simulation``) it is simulated.
        """
        key = attestation_key if attestation_key is not None else self._attestation_key
        auth_data = DIRECT_MEASUREMENT_MARK if real_measurement else QE_AUTH_DATA
        qe_report = _report_body(
            cpusvn=bytes(SIMULATION_TCB_COMPONENTS),
            attributes=QE_ATTRIBUTES,
            mrenclave=QE_MRENCLAVE,
            mrsigner=QE_MRSIGNER,
            isv_prod_id=QE_ISV_PROD_ID,
            isv_svn=QE_ISV_SVN,
            report_data=hashlib.sha256(_raw_public_key(key) + auth_data).digest() + bytes(32),
        )
        return QuotingEnclave(
            key, qe_report, self.sign_qe_report(qe_report), self.pck_chain_pem, auth_data
        )


def _raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


@dataclass(frozen=True)
class QuotingEnclave:
    """What signs quotes: the attestation key, its PCK-signed QE report, the PCK chain, and the
    QE authentication data the report binds (every quote carries it)."""

    attestation_key: ec.EllipticCurvePrivateKey
    qe_report: bytes
    qe_report_signature: bytes
    pck_chain_pem: bytes
    auth_data: bytes

    @property
    def attestation_public_key(self) -> bytes:
        return _raw_public_key(self.attestation_key)

    def to_json(self) -> dict[str, str]:
        return {
            "attestation_key": private_key_pem(self.attestation_key).decode("ascii"),
            "qe_report": self.qe_report.hex(),
            "qe_report_signature": self.qe_report_signature.hex(),
            "pck_chain": self.pck_chain_pem.decode("ascii"),
            "auth_data": self.auth_data.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> QuotingEnclave:
        """Raises ValueError, KeyError or TypeError on anything malformed."""
        key = serialization.load_pem_private_key(data["attestation_key"].encode(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the attestation key is not an ECDSA P-256 key")
        auth_data = bytes.fromhex(data["auth_data"])
        if len(auth_data) > 0xFFFF:
            raise ValueError("the QE authentication data is over 65535 bytes")
        return cls(
            key,
            bytes.fromhex(data["qe_report"]),
            bytes.fromhex(data["qe_report_signature"]),
            data["pck_chain"].encode("ascii"),
            auth_data,
        )


def _keys_complete(directory: Path) -> bool:
    names = (
        _CA_KEY,
        _CA_CERT,
        _PCK_CA_KEY,
        _PCK_CA_CERT,
        _PCK_KEY,
        _PCK_CERT,
        _TCB_KEY,
        _TCB_CERT,
        _ATT_KEY,
    )
    return all((directory / name).is_file() for name in names)


def _create_keys(directory: Path, now: dt.datetime) -> None:
    ca = _issue("Root CA", issuer=None, ca=True, path_length=1, now=now)
    # "Processor" in the name mirrors Intel's PCK CA naming, which tells a verifier which CRL
    # (ca=processor) covers the leaf.
    pck_ca = _issue("PCK Processor CA", issuer=ca, ca=True, path_length=0, now=now)
    sgx_extensions = x509.UnrecognizedExtension(
        x509.ObjectIdentifier(SGX_EXTENSIONS_OID),
        sgx_extensions_der(ppid=secrets.token_bytes(16)),
    )
    pck = _issue("PCK Certificate", issuer=pck_ca, ca=False, extra=[sgx_extensions], now=now)
    tcb = _issue("TCB Signing", issuer=ca, ca=False, now=now)
    att_key = ec.generate_private_key(ec.SECP256R1())
    # Keys first, certificates after, ca.pem last: _keys_complete() then never sees a
    # certificate whose key is missing.
    for name, key in (
        (_CA_KEY, ca.key),
        (_PCK_CA_KEY, pck_ca.key),
        (_PCK_KEY, pck.key),
        (_TCB_KEY, tcb.key),
        (_ATT_KEY, att_key),
    ):
        _write_private_key(directory / name, key)
    for name, issued in (
        (_PCK_CA_CERT, pck_ca),
        (_PCK_CERT, pck),
        (_TCB_CERT, tcb),
        (_CA_CERT, ca),
    ):
        _write_cert(directory / name, issued.cert)


def _collateral_fresh(directory: Path, now: dt.datetime) -> bool:
    collateral = directory / _COLLATERAL
    try:
        body = json.loads(read_limited(collateral / "tcb_info.json", MAX_DOCUMENT_SIZE))
        next_update = dt.datetime.fromisoformat(
            body["tcbInfo"]["nextUpdate"].replace("Z", "+00:00")
        )
        for name in (
            "qe_identity.json",
            "tcb_info_issuer_chain.pem",
            "pck_crl.der",
            "root_ca_crl.der",
        ):
            if not (collateral / name).is_file():
                return False
        # Collateral signed by keys that were since replaced is as good as missing.
        issuer_chain = x509.load_pem_x509_certificates(
            read_limited(collateral / "tcb_info_issuer_chain.pem", MAX_DOCUMENT_SIZE)
        )
        if issuer_chain[-1] != x509.load_pem_x509_certificate(_read(directory / _CA_CERT)):
            return False
    # InputRefused is an OSError: collateral that is not a file, or too large, is re-issued.
    except (OSError, EnvironmentMissing, ValueError, KeyError, TypeError, IndexError):
        return False
    return next_update - now > COLLATERAL_REFRESH_MARGIN


def _issue_collateral(directory: Path, now: dt.datetime) -> None:
    collateral = directory / _COLLATERAL
    collateral.mkdir(mode=0o755, exist_ok=True)
    ca = x509.load_pem_x509_certificate(_read(directory / _CA_CERT))
    pck_ca = x509.load_pem_x509_certificate(_read(directory / _PCK_CA_CERT))
    tcb_pem = _read(directory / _TCB_CERT)
    ca_key = _read_private_key(directory / _CA_KEY)
    pck_ca_key = _read_private_key(directory / _PCK_CA_KEY)
    tcb_key = _read_private_key(directory / _TCB_KEY)
    files = {
        "tcb_info.json": _signed_json("tcbInfo", _tcb_info(now), tcb_key),
        "qe_identity.json": _signed_json("enclaveIdentity", _qe_identity(now), tcb_key),
        "tcb_info_issuer_chain.pem": tcb_pem + ca.public_bytes(serialization.Encoding.PEM),
        "pck_crl.der": _empty_crl(pck_ca, pck_ca_key, now),
        "root_ca_crl.der": _empty_crl(ca, ca_key, now),
    }
    for name, data in files.items():
        write_atomic(collateral / name, data, 0o644)


def simulation_pki_exists(directory: Path | None = None) -> bool:
    """Whether the simulation PKI's keys exist (read only: creates nothing)."""
    return _keys_complete(directory if directory is not None else simulation_dir())


def ensure_simulation_pki(directory: Path | None = None) -> SimulationPKI:
    """Create the simulation PKI on first use and refresh its collateral when it goes stale.

    Idempotent and safe when several processes call it at once: creation runs under an
    exclusive lock and every file is replaced atomically. Keys, once made, are kept.
    """
    directory = directory if directory is not None else simulation_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        with _locked(directory):
            if not _keys_complete(directory):
                _create_keys(directory, now)
            if not _collateral_fresh(directory, now):
                _issue_collateral(directory, now)
    except OSError as err:
        raise EnvironmentMissing(
            f"cannot create the simulation PKI in {directory}: {err.strerror or err}; "
            "set XDG_CONFIG_HOME to a writable directory"
        ) from err
    return SimulationPKI(directory)


def refresh_collateral(directory: Path) -> bool:
    """Re-issue stale collateral of an existing simulation PKI; never creates or replaces keys.

    For verifiers handed a local ``ca.pem``: returns False (and changes nothing) when
    ``directory`` does not hold a complete simulation PKI whose keys this process can read.
    """
    try:
        if not _keys_complete(directory) or not os.access(directory / _CA_KEY, os.R_OK):
            return False
        now = dt.datetime.now(dt.timezone.utc)
        with _locked(directory):
            if not _collateral_fresh(directory, now):
                _issue_collateral(directory, now)
    except OSError:
        return False
    return True


# --- quotes ---------------------------------------------------------------------------------


def _report_body(
    *,
    cpusvn: bytes,
    attributes: bytes,
    mrenclave: bytes,
    mrsigner: bytes,
    isv_prod_id: int,
    isv_svn: int,
    report_data: bytes,
) -> bytes:
    """An SGX REPORT body (384 bytes; Intel SGX SDK ``sgx_report_body_t``)."""
    body = b"".join(
        (
            cpusvn,  # cpu_svn
            bytes(4),  # misc_select
            bytes(12),  # reserved1
            bytes(16),  # isv_ext_prod_id
            attributes,  # attributes: flags (u64) || xfrm (u64)
            mrenclave,
            bytes(32),  # reserved2
            mrsigner,
            bytes(32),  # reserved3
            bytes(64),  # config_id
            struct.pack("<HHH", isv_prod_id, isv_svn, 0),  # isv_prod_id, isv_svn, config_svn
            bytes(42),  # reserved4
            bytes(16),  # isv_family_id
            report_data,
        )
    )
    assert len(body) == 384
    return body


class SimulationQuoteProvider:
    """Quotes from the simulation PKI: what the bootstrap uses when there is no SGX."""

    def __init__(
        self,
        *,
        mrenclave: bytes,
        mrsigner: bytes,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        debug: bool = False,
        directory: Path | None = None,
        quoting_enclave: QuotingEnclave | None = None,
    ) -> None:
        """Quotes signed by ``quoting_enclave``, or by the simulation PKI in ``directory``.

        Given a quoting enclave, the provider never touches the PKI's files (it may not see
        them: inside ``gramine-direct`` it only has what mse-run handed it).
        """
        if len(mrenclave) != 32 or len(mrsigner) != 32:
            raise ValueError("MRENCLAVE and MRSIGNER must be 32 bytes each")
        if not (0 <= isv_prod_id <= 0xFFFF and 0 <= isv_svn <= 0xFFFF):
            raise ValueError("ISV product id and SVN must fit in 16 bits")
        self._mrenclave = mrenclave
        self._mrsigner = mrsigner
        self._isv_prod_id = isv_prod_id
        self._isv_svn = isv_svn
        self._debug = debug
        self._pki: SimulationPKI | None = None
        if quoting_enclave is None:
            self._pki = ensure_simulation_pki(directory)
        # The PKI's keys are read on the first quote, so a damaged key fails there, once.
        self._qe = quoting_enclave

    @property
    def simulated(self) -> bool:
        return True

    @property
    def pki(self) -> SimulationPKI:
        if self._pki is None:
            raise ValueError("this provider was given a quoting enclave, not the simulation PKI")
        return self._pki

    def quote(self, report_data: bytes) -> bytes:
        """A version 3 ECDSA quote of the simulated enclave with ``report_data`` (64 bytes)."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError(f"report data must be {REPORT_DATA_SIZE} bytes")
        if self._qe is None:
            self._qe = self.pki.quoting_enclave()
        qe = self._qe
        cpusvn = bytes(SIMULATION_TCB_COMPONENTS)
        flags = FLAG_INIT | FLAG_MODE64BIT | (FLAG_DEBUG if self._debug else 0)
        # user_data: the QE id (16 bytes, here derived from the PCK chain) then 4 zero bytes.
        qe_id = hashlib.sha256(qe.pck_chain_pem).digest()[:16]
        header = struct.pack(
            "<HHIHH16s20s",
            QUOTE_VERSION_3,
            ATTESTATION_KEY_ECDSA_P256,
            0,  # TEE type: SGX
            QE_ISV_SVN,
            SIMULATION_PCESVN,
            INTEL_QE_VENDOR_ID,
            qe_id + bytes(4),
        )
        body = _report_body(
            cpusvn=cpusvn,
            attributes=struct.pack("<QQ", flags, _XFRM),
            mrenclave=self._mrenclave,
            mrsigner=self._mrsigner,
            isv_prod_id=self._isv_prod_id,
            isv_svn=self._isv_svn,
            report_data=report_data,
        )
        chain = qe.pck_chain_pem
        signature_data = b"".join(
            (
                _raw_signature(qe.attestation_key, header + body),
                qe.attestation_public_key,
                qe.qe_report,
                qe.qe_report_signature,
                struct.pack("<H", len(qe.auth_data)),
                qe.auth_data,
                struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(chain)),
                chain,
            )
        )
        return header + body + struct.pack("<I", len(signature_data)) + signature_data
