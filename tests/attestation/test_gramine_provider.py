"""GramineQuoteProvider against a directory laid out like Gramine's /dev/attestation.

Gramine's pseudo-files cannot exist here, so the directory holds what Gramine would: the
attestation type and, as the quote, a quote from the simulation backend for the report data the
test expects. What is checked is the provider's own logic: the attestation type, the write of
the report data, and that a quote binding other report data is refused.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from mse_base._internal.runtime import bootstrap
from mse_base._internal.runtime.attestation import GramineQuoteProvider
from mse_base._internal.simulation.pki import SimulationPKI, SimulationQuoteProvider
from mse_base.errors import EnvironmentMissing, Error, UsageError

MINE = bytes(range(64))
OTHER = bytes(64)


def _attestation_dir(tmp_path: Path, sim_pki: SimulationPKI, quoted: bytes) -> Path:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text("dcap\n")
    provider = SimulationQuoteProvider(
        mrenclave=bytes(32), mrsigner=bytes(32), directory=sim_pki.directory
    )
    (root / "quote").write_bytes(provider.quote(quoted))
    return root


def test_quote_with_the_written_report_data_is_returned(
    tmp_path: Path, sim_pki: SimulationPKI
) -> None:
    root = _attestation_dir(tmp_path, sim_pki, MINE)
    quote = GramineQuoteProvider(root).quote(MINE)
    assert quote == (root / "quote").read_bytes()
    assert (root / "user_report_data").read_bytes() == MINE


def test_quote_binding_other_report_data_is_refused(tmp_path: Path, sim_pki: SimulationPKI) -> None:
    root = _attestation_dir(tmp_path, sim_pki, OTHER)
    with pytest.raises(Error, match="does not carry the report data just written"):
        GramineQuoteProvider(root).quote(MINE)


def test_non_dcap_attestation_is_refused(tmp_path: Path, sim_pki: SimulationPKI) -> None:
    root = _attestation_dir(tmp_path, sim_pki, MINE)
    (root / "attestation_type").write_text("none\n")
    with pytest.raises(EnvironmentMissing, match=r'sgx\.remote_attestation = "dcap"'):
        GramineQuoteProvider(root).quote(MINE)


def test_empty_quote_is_refused(tmp_path: Path, sim_pki: SimulationPKI) -> None:
    root = _attestation_dir(tmp_path, sim_pki, MINE)
    (root / "quote").write_bytes(b"")
    with pytest.raises(Error, match="empty quote"):
        GramineQuoteProvider(root).quote(MINE)


class _NeverRead(io.RawIOBase):
    """Standard input that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the bootstrap read standard input")


@pytest.mark.parametrize("attestation_type", ["dcap\n", "epid\n", "none\n", "", None])
def test_no_quote_is_direct_mode_only_when_gramine_says_there_is_no_sgx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attestation_type: str | None
) -> None:
    # Gramine writes attestation_type on every SGX host ("none" too). An SGX enclave whose quote
    # file is missing must refuse, not take its identity and its sealing key from what the host
    # writes on standard input (the --direct launch line).
    root = tmp_path / "attestation"
    (root / "keys").mkdir(parents=True)
    if attestation_type is None:
        (root / "attestation_type").mkdir()  # there, but unreadable
    else:
        (root / "attestation_type").write_text(attestation_type)
    monkeypatch.delenv(bootstrap.SIMULATION_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(_NeverRead())))
    with pytest.raises(EnvironmentMissing, match="refusing to serve without a quote"):
        bootstrap.detect_platform(root)
    assert list((root / "keys").iterdir()) == []


def test_no_attestation_type_is_direct_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gramine without SGX (gramine-direct) has /dev/attestation/keys/ and nothing else.
    root = tmp_path / "attestation"
    (root / "keys").mkdir(parents=True)
    monkeypatch.delenv(bootstrap.SIMULATION_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}\n")))
    # It reads the launch line (here a bad one): the direct path, not the refusal.
    with pytest.raises(UsageError, match="standard input: unknown launch format"):
        bootstrap.detect_platform(root)
