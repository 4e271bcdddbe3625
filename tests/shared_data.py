"""Where the shared real-quote test data lives: ``../shared/sgx-quotes`` beside the clone.

CI clones the repository into another folder with a copy of ``shared/`` beside it, so the path is
found relative to this file; ``MSE_SGX_QUOTES`` overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_QUOTES = Path(
    os.environ.get(
        "MSE_SGX_QUOTES", Path(__file__).resolve().parents[1].parent / "shared" / "sgx-quotes"
    )
)
