"""Where the real-quote test data lives: ``tests/data/sgx-quotes`` in this repository.

The quotes, collateral and ``expected.json`` are data taken from permissively licensed public
repositories; ``tests/data/sgx-quotes/README.md`` records where each file came from, its licence,
and how the expected verdicts were established. ``MSE_SGX_QUOTES`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_QUOTES = Path(
    os.environ.get("MSE_SGX_QUOTES", Path(__file__).resolve().parent / "data" / "sgx-quotes")
)
