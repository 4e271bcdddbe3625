"""Real Gramine in the loop: these tests run the product's manifest under ``gramine-direct``.

Without Gramine they are skipped, each saying why, and with ``CI=true`` failed instead
(tests.gramine_tools says when).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gramine_tools import cannot_run, require_gramine

ROOT = Path(__file__).resolve().parents[2]
# The distribution's Python, as the image uses it (Dockerfile: python3 -m venv /opt/mse/venv).
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture(autouse=True)
def gramine() -> None:
    """Every test here needs Gramine: skipped without it, failed without it under CI=true."""
    require_gramine()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    variables = dict(os.environ)
    variables.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    return variables


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv like the image's: the distribution's Python, the toolkit (not editable) and Flask.

    It lives under pytest's temporary directory, that is under /tmp, where the enclave mounts
    its tmpfs: running from it is the check that the tmpfs hides nothing.
    """
    require_gramine()
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        cannot_run(
            f"{SYSTEM_PYTHON} with its venv module is needed to build the image's venv: install "
            "python3-venv (dev/test.sh and .ci/run do)"
        )
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-compile",  # as the image does: no byte code in the measured venv
            str(ROOT),
            *(ROOT / "examples" / "flask" / "requirements.txt").read_text().split(),
        ],
        check=True,
        capture_output=True,
    )
    return venv


@pytest.fixture(scope="session")
def dev_bin() -> Path:
    """The development venv's scripts (pyenv's Python, editable toolkit, FastAPI installed)."""
    return Path(sys.executable).parent
