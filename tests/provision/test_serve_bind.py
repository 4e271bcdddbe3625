"""``mse-secrets serve``'s default address: this machine only when it trusts a simulation CA."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mse_base._internal.simulation.pki import SimulationQuoteProvider
from tests.certs import self_signed_pem
from tests.net import free_port, listening_addresses
from tests.processes import stop_process

from .conftest import BIN, read


@pytest.mark.parametrize(("simulation", "address"), [(True, "127.0.0.1"), (False, "0.0.0.0")])
def test_serve_binds_loopback_by_default_for_simulated_enclaves(
    tmp_path: Path, env: dict[str, str], simulation: bool, address: str
) -> None:
    cert, key = self_signed_pem(tmp_path, "server")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{"00" * 32}"]\n')
    trust: list[str] = []
    if simulation:
        pki = Path(env["XDG_CONFIG_HOME"]) / "mse" / "simulation"
        SimulationQuoteProvider(mrenclave=b"\0" * 32, mrsigner=b"\0" * 32, directory=pki)
        trust = ["--simulation-ca", str(pki / "ca.pem")]
    port = free_port()
    err = tmp_path / "serve.err"
    proc = subprocess.Popen(
        [str(BIN / "mse-secrets"), "serve", "--policy", str(policy), "--cert", str(cert),
         "--key", str(key), "--port", str(port), *trust],
        stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "serving" not in read(err):
            assert proc.poll() is None and time.monotonic() < deadline, read(err)
            time.sleep(0.1)
        assert f"https://{address}:{port}/mse/secrets" in read(err)
        assert listening_addresses(port) == {address}
    finally:
        stop_process(proc)
