"""What ``mse-run --direct`` hands the enclave it starts under ``gramine-direct``.

Design. ``gramine-direct`` runs the SGX manifest unchanged, so the enclave's MRENCLAVE is the real
one ``gramine-sgx-sign`` computed. That manifest fixes argv and environment and lets the enclave
read only its trusted files, its encrypted mount and its tmpfs; no mount or variable can be added
for this mode without changing the measurement. The one channel it leaves open is standard input,
which Gramine passes through from the host. So mse-run writes one JSON line there, and closes it,
before the enclave does anything else:

* the identity read from the SIGSTRUCT (MRENCLAVE, MRSIGNER, ISV fields, debug), which on SGX the
  CPU would put in the report;
* a quoting enclave (:class:`~mse_base._internal.simulation.pki.QuotingEnclave`): a fresh
  attestation key certified by the simulation PKI's PCK key, as Intel's QE certifies its own; the
  PKI's keys stay on the host, and only this enclave can sign with this key, which is how mse-run
  tells its own enclave's certificate from another server's on the port;
* a throwaway key for the sealed-secrets mount: Gramine derives ``_sgx_mrenclave`` from the CPU
  only on SGX; without SGX the key is empty until written to ``/dev/attestation/keys/``.

Inside SGX, ``/dev/attestation/quote`` exists and the bootstrap never reads standard input, so a
host cannot talk a real enclave into a simulated quote (nor would anyone trust one).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import BinaryIO

from mse_base._internal.simulation.pki import QuotingEnclave

# One JSON line: a PCK chain and a key in PEM are a few kilobytes.
_MAX_LINE = 1 << 16
SEALING_KEY_SIZE = 16
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

    @classmethod
    def new_sealing_key(cls) -> bytes:
        return secrets.token_bytes(SEALING_KEY_SIZE)

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
        """Read the launch line; ValueError (with the reason) on anything else."""
        line = stream.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ValueError("no launch line from mse-run --direct on standard input")
        try:
            data = json.loads(line)
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown launch format {data.get('format')!r}")
            launch = cls(
                mrenclave=bytes.fromhex(data["mrenclave"]),
                mrsigner=bytes.fromhex(data["mrsigner"]),
                isv_prod_id=int(data["isv_prod_id"]),
                isv_svn=int(data["isv_svn"]),
                debug=bool(data["debug"]),
                quoting_enclave=QuotingEnclave.from_json(data["quoting_enclave"]),
                sealing_key=bytes.fromhex(data["sealing_key"]),
            )
        except (KeyError, TypeError, AttributeError, UnicodeError) as err:
            raise ValueError(f"malformed launch line ({err!r})") from None
        if len(launch.sealing_key) != SEALING_KEY_SIZE:
            raise ValueError(f"the sealing key must be {SEALING_KEY_SIZE} bytes")
        return launch
