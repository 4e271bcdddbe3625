"""Real Gramine in the loop: these tests run the product's manifest under ``gramine-direct``.

Without Gramine they are skipped, each saying why (pytest -ra lists the reason and the count on
the closing line); with ``CI=true`` a missing Gramine fails them instead, so CI cannot pass
without having run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("gramine-direct", "gramine-sgx-sign", "gramine-sgx-sigstruct-view")
# The distribution's Python, as the image uses it (Dockerfile: python3 -m venv /opt/mse/venv).
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _require_gramine() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    reason = (
        f"Gramine is not installed ({', '.join(missing)} not on PATH): install "
        "../shared/gramine/gramine_1.9-1mse_amd64.deb (apt-get install ./gramine_*.deb) to run "
        "the tests on real Gramine"
    )
    _cannot_run(reason)


def _cannot_run(reason: str) -> NoReturn:
    """Skip, saying why; under CI=true fail instead, so CI cannot pass without these tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def gramine() -> None:
    """Every test here needs Gramine: skipped without it, failed without it under CI=true."""
    _require_gramine()


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
    _require_gramine()
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        _cannot_run(
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
