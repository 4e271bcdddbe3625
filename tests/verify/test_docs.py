"""The example in mse_base.verify's docstring runs and prints what it says."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import mse_base.verify
from tests.shared_data import SHARED_QUOTES


def test_module_docstring_example_runs() -> None:
    doc = mse_base.verify.__doc__
    assert doc is not None
    code = textwrap.dedent(doc.split("Example::")[1].split("\nEvery check")[0])
    # The example names the default location; $MSE_SGX_QUOTES may put the quotes elsewhere.
    code = code.replace('"tests/data/sgx-quotes/', f'"{SHARED_QUOTES}/')
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "SWHardeningNeeded ('INTEL-SA-00615',)"
