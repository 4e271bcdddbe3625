"""What ``mse-run --direct`` hands the enclave it starts under ``gramine-direct``.

Design. ``gramine-direct`` runs the SGX manifest unchanged, so the enclave's MRENCLAVE is the real
one ``gramine-sgx-sign`` computed. That manifest fixes argv and environment (but for the port and
bind address, which the host sets in every mode) and lets the enclave read only its trusted files,
its encrypted mount and its tmpfs; no mount or variable can be added for this mode without
changing the measurement. The one channel it leaves open is standard input,
which Gramine passes through from the host. So mse-run writes one JSON line there, and closes it,
before the enclave does anything else:

* the identity read from the SIGSTRUCT (MRENCLAVE, MRSIGNER, ISV fields, debug), which on SGX the
  CPU would put in the report;
* a quoting enclave (:class:`~mse_base._internal.simulation.pki.QuotingEnclave`): a fresh
  attestation key certified by the simulation PKI's PCK key, as Intel's QE certifies its own; the
  PKI's keys stay on the host, and only this enclave can sign with this key, which is how mse-run
  tells its own enclave's certificate from another server's on the port; its QE report also
  binds the QE authentication data that tells verifiers the quoted MRENCLAVE is the real one
  (``dcap.quote.DIRECT_MEASUREMENT_MARK``), which the enclave cannot change;
* the key for the sealed-secrets mount: Gramine derives ``_sgx_mrenclave`` from the CPU only on
  SGX; without SGX the key is empty until written to ``/dev/attestation/keys/``, so mse-run hands
  over its stand-in, derived from MRENCLAVE (simulation.sealing).

The bootstrap reads standard input only when Gramine says it runs without SGX (no
``/dev/attestation/attestation_type``, which Gramine adds on every SGX host); inside SGX it never
does, so a host cannot talk a real enclave into a simulated quote (nor would anyone trust one), or
into a sealing key of its choosing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from mse_base._internal.simulation.pki import QuotingEnclave
from mse_base._internal.simulation.sealing import KEY_SIZE

# One JSON line: a PCK chain and a key in PEM are a few kilobytes.
_MAX_LINE = 1 << 16
_FORMAT = "mse-direct-v1"


@dataclass(frozen=True)
class DirectLaunch:
    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool
    quoting_enclave: QuotingEnclave
    sealing_key: bytes

    def to_line(self) -> bytes:
        data = {
            "format": _FORMAT,
            "mrenclave": self.mrenclave.hex(),
            "mrsigner": self.mrsigner.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "quoting_enclave": self.quoting_enclave.to_json(),
            "sealing_key": self.sealing_key.hex(),
        }
        return json.dumps(data, sort_keys=True).encode("ascii") + b"\n"

    @classmethod
    def read(cls, stream: BinaryIO) -> DirectLaunch:
        """Read the launch line; ValueError (one line: which field, what was wanted) otherwise.

        Every field is checked for its JSON type, not coerced: ``bool("false")`` is True, and an
        ISV field out of range would surface only later, as a ``struct.error`` traceback.
        """
        line = stream.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ValueError("no launch line from mse-run --direct on standard input")
        try:
            data = json.loads(line)
        except (ValueError, UnicodeError):
            raise ValueError("the launch line is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("the launch line is not a JSON object")
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown launch format {data.get('format')!r}")
        qe = _field(data, "quoting_enclave", dict, "an object")
        try:
            quoting_enclave = QuotingEnclave.from_json(qe)
        except (KeyError, TypeError, AttributeError, ValueError, UnicodeError) as err:
            raise ValueError(f"launch field 'quoting_enclave' is malformed ({err!r})") from None
        return cls(
            mrenclave=_hex(data, "mrenclave", 32),
            mrsigner=_hex(data, "mrsigner", 32),
            isv_prod_id=_u16(data, "isv_prod_id"),
            isv_svn=_u16(data, "isv_svn"),
            debug=_field(data, "debug", bool, "true or false"),
            quoting_enclave=quoting_enclave,
            sealing_key=_hex(data, "sealing_key", KEY_SIZE),
        )


_T = TypeVar("_T")


def _field(data: dict[str, Any], name: str, kind: type[_T], wanted: str) -> _T:
    if name not in data:
        raise ValueError(f"launch field {name!r} is missing")
    value = data[name]
    # bool is an int in Python: an ISV field must not accept true, nor debug accept 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"launch field {name!r} must be {wanted}, not {value!r}")
    return value


def _u16(data: dict[str, Any], name: str) -> int:
    value = _field(data, name, int, "an integer from 0 to 65535")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"launch field {name!r} must be an integer from 0 to 65535, not {value}")
    return value


def _hex(data: dict[str, Any], name: str, size: int) -> bytes:
    wanted = f"{size} bytes in hexadecimal"
    text = _field(data, name, str, wanted)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != size:
        raise ValueError(f"launch field {name!r} must be {wanted}")
    return value
