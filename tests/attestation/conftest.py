"""Shared fixtures: the real shared quotes and a simulation PKI in a throwaway config dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mse_base._internal.simulation.pki import SimulationPKI, ensure_simulation_pki
from tests.shared_data import SHARED_QUOTES

SHARED = SHARED_QUOTES


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared quotes are missing: {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def expected(shared: Path) -> dict[str, dict[str, Any]]:
    return {case["case"]: case for case in json.loads((shared / "expected.json").read_text())}


@pytest.fixture(scope="session")
def sim_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CONFIG_HOME holding one simulation PKI for the whole session."""
    return tmp_path_factory.mktemp("xdg-config")


@pytest.fixture(scope="session")
def sim_pki(sim_config: Path) -> SimulationPKI:
    return ensure_simulation_pki(sim_config / "mse" / "simulation")
