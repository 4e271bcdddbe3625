"""TCB status convergence (Intel QVL rules), signed-JSON slicing and the packaged trust root."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from mse_base._internal.dcap import chain
from mse_base._internal.dcap.collateral import split_signed_json
from mse_base._internal.dcap.tcb import converge
from mse_base.errors import EnvironmentMissing, UsageError
from mse_base.verify import (
    Collateral,
    CollateralError,
    TcbStatusError,
    Verifier,
)

from .conftest import ANY_STATUS, CASES, SHARED, collateral_of, quote_of, when


@pytest.mark.parametrize(
    ("platform", "qe", "expected"),
    [
        ("UpToDate", "UpToDate", "UpToDate"),
        ("SWHardeningNeeded", "UpToDate", "SWHardeningNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "UpToDate", "ConfigurationAndSWHardeningNeeded"),
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate", "OutOfDate"),
        ("Revoked", "OutOfDate", "Revoked"),
        ("UpToDate", "Revoked", "Revoked"),
        ("OutOfDateConfigurationNeeded", "Revoked", "Revoked"),
    ],
)
def test_converge_like_intel_qvl(platform: str, qe: str, expected: str) -> None:
    assert converge(platform, qe) == expected


def test_unknown_qe_status_fails_closed() -> None:
    with pytest.raises(TcbStatusError):
        converge("UpToDate", "SWHardeningNeeded")


def test_signed_text_is_sliced_not_reserialised() -> None:
    raw = (SHARED / "phala_sgx_v3" / "tcb_info.json").read_bytes()
    text, signature = split_signed_json(raw, "tcbInfo")
    assert raw == b'{"tcbInfo":' + text + b',"signature":"' + signature.hex().encode() + b'"}'
    assert len(signature) == 64


@pytest.mark.parametrize(
    "raw",
    [
        b'{"tcbInfo":{},"signature":"00"}',
        b'{"enclaveIdentity":{},"signature":"' + b"00" * 64 + b'"}',
        b'{"tcbInfo":{},"signature":"' + b"zz" * 64 + b'"}',
        b'{"tcbInfo":{},"signature":"' + b"00" * 64 + b'"} x',
        b"",
    ],
)
def test_malformed_signed_json_is_refused(raw: bytes) -> None:
    with pytest.raises(CollateralError):
        split_signed_json(raw, "tcbInfo")


def test_packaged_root_is_intels_and_pinned() -> None:
    root = chain.intel_sgx_root()
    shared = (SHARED / "intel_sgx_root_ca.der").read_bytes()
    assert root.public_bytes(Encoding.DER) == shared
    assert chain.spki_sha256(root) == chain.INTEL_SGX_ROOT_SPKI_SHA256
    spki = chain.spki_der(root, chain.PCK_CHAIN)
    assert hashlib.sha256(spki).hexdigest() == chain.INTEL_SGX_ROOT_SPKI_SHA256
    assert Path(chain.__file__).parents[2].joinpath("_store/intel_sgx_root_ca.der").is_file()


def test_missing_collateral_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "tcb_info.json").write_bytes(b"{}")
    with pytest.raises(UsageError, match=r"tcb_info_issuer_chain\.pem is missing"):
        Collateral.from_directory(tmp_path)


def test_collateral_with_wrong_field_types_fails_closed() -> None:
    good = collateral_of("automata_sgx_v3")
    at = when(CASES["automata_sgx_v3"]["verify_at"])
    for field in dataclasses.fields(good):
        bad = dataclasses.replace(good, **{field.name: getattr(good, field.name).decode("latin-1")})
        with pytest.raises(CollateralError, match=f"collateral {field.name}: expected bytes"):
            Verifier(collateral=bad, policy=ANY_STATUS).verify_quote(
                quote_of("automata_sgx_v3"), at=at
            )


def test_packaged_root_with_another_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    chain.intel_sgx_root.cache_clear()
    try:
        monkeypatch.setattr(chain, "INTEL_SGX_ROOT_SPKI_SHA256", "00" * 32)
        # A damaged installation: no quote can be checked, and none is rejected either.
        with pytest.raises(EnvironmentMissing, match=r"pinned public key.*reinstall mse-base"):
            chain.intel_sgx_root()
        with pytest.raises(EnvironmentMissing, match="pinned public key"):
            Verifier(collateral=collateral_of("automata_sgx_v3"))
    finally:
        monkeypatch.undo()
        chain.intel_sgx_root.cache_clear()
    assert chain.spki_sha256(chain.intel_sgx_root()) == chain.INTEL_SGX_ROOT_SPKI_SHA256
