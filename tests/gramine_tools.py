"""Whether this host has Gramine, for the tests that need it (tests/gramine, ``--direct`` cases).

Without Gramine they are skipped, each saying why (pytest -ra lists the reason and the count on
the closing line); with ``CI=true`` a missing Gramine fails them instead, so CI cannot pass
without having run them. ``MSE_GRAMINE_HIDDEN=1``, which dev/without-gramine.sh sets after hiding
Gramine on purpose (the no-Gramine pass of ``dev/test.sh --without-gramine``), makes them skip
under CI=true too; a Gramine still visible then fails them, as the hiding did not work.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# What tests/gramine uses; mse-run --direct itself needs only gramine-sgx-sign and gramine-direct.
TOOLS = ("gramine-direct", "gramine-sgx-sign", "gramine-sgx-sigstruct-view")
DIRECT_TOOLS = ("gramine-sgx-sign", "gramine-direct")


def hidden() -> bool:
    """Gramine hidden on purpose (dev/without-gramine.sh)."""
    return os.environ.get("MSE_GRAMINE_HIDDEN") == "1"


def require_gramine(tools: tuple[str, ...] = TOOLS) -> None:
    """Return when ``tools`` are on PATH; otherwise skip, or fail under CI=true."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if hidden() and len(missing) < len(tools):
        found = ", ".join(tool for tool in tools if tool not in missing)
        pytest.fail(
            f"MSE_GRAMINE_HIDDEN=1 but {found} on PATH: Gramine is not hidden (run the tests "
            "through dev/without-gramine.sh, or unset MSE_GRAMINE_HIDDEN)",
            pytrace=False,
        )
    if not missing:
        return
    if hidden():
        pytest.skip(
            f"Gramine hidden on purpose (MSE_GRAMINE_HIDDEN=1, dev/without-gramine.sh): "
            f"{', '.join(missing)} not on PATH"
        )
    cannot_run(
        f"Gramine is not installed ({', '.join(missing)} not on PATH): install "
        "../shared/gramine/gramine_1.9-1mse_amd64.deb (apt-get install ./gramine_*.deb) to run "
        "the tests on real Gramine"
    )


def cannot_run(reason: str) -> NoReturn:
    """Skip, saying why; under CI=true fail instead, so CI cannot pass without these tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
