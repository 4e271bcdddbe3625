"""The simulated MRENCLAVE: a deterministic digest of what Gramine would measure.

Real MRENCLAVE is SHA-256 over ECREATE/EADD/EEXTEND records of every enclave page: Gramine's
loader, the manifest (which carries every trusted file's hash and the argv), the enclave size and
thread slots. Without Gramine's loader we cannot reproduce those pages, so simulation hashes the
same inputs under its own domain tag. It changes whenever the real one would change for our inputs,
but the two values never coincide, and every place that prints it says "simulated".
"""

from __future__ import annotations

import hashlib
import struct

_DOMAIN = b"mse-base simulated MRENCLAVE v1\x00"


def simulated_mrenclave(manifest_text: str, enclave_size: int, max_threads: int) -> bytes:
    digest = hashlib.sha256(_DOMAIN)
    digest.update(struct.pack("<QI", enclave_size, max_threads))
    digest.update(manifest_text.encode("utf-8"))
    return digest.digest()
