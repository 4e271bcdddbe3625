"""For every test directory: ``@pytest.mark.gramine``, a test that needs Gramine on this host.

Outside tests/gramine (whose every test needs Gramine, its conftest says so) a test, or one
``pytest.param`` of it, that runs ``mse-run --direct`` carries the mark. Without Gramine's tools
it is then skipped in setup, so pytest -ra names it with the reason; tests.gramine_tools says when
it fails instead (CI=true).
"""

from __future__ import annotations

import pytest

from tests.gramine_tools import DIRECT_TOOLS, require_gramine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gramine: needs gramine-direct and gramine-sgx-sign (skipped without them, failed under "
        "CI=true unless MSE_GRAMINE_HIDDEN=1)",
    )


@pytest.fixture(autouse=True)
def _gramine_mark(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("gramine") is not None:
        require_gramine(DIRECT_TOOLS)
