"""``mse-verify --json`` rejections, as a program reads them: a real subprocess on the real quotes.

The object has the same keys verified or not; a rejection says which check failed
(``failed_check``) and every field established before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.net import free_port
from tests.pins import PINNED_JSON_FIELDS, QUOTE_CHECKS

MSE_VERIFY = Path(sys.executable).with_name("mse-verify")
KEYS = list(PINNED_JSON_FIELDS)
UP_TO_QE_IDENTITY = list(QUOTE_CHECKS[: QUOTE_CHECKS.index("qe.identity") + 1])


def verify_json(*args: str | Path, status: int = 1) -> dict[str, Any]:
    proc = subprocess.run(
        [str(MSE_VERIFY), *map(str, args), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )
    assert proc.returncode == status, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == KEYS
    assert out["verified"] is (status == 0)
    return out


def quote_args(shared: Path, case: str, at: str) -> list[str | Path]:
    return ["--quote", shared / case / "quote.bin", "--collateral", shared / case, "--at", at]


def test_phala_with_the_default_policy(shared: Path, expected: dict[str, dict[str, Any]]) -> None:
    want = expected["phala_sgx_v3"]
    out = verify_json(*quote_args(shared, "phala_sgx_v3", want["verify_at"]))
    assert out == {
        "verified": False,
        "failed_check": "policy.tcb_status",
        "reasons": [
            "TCB status: ConfigurationAndSWHardeningNeeded (advisories: INTEL-SA-00289, "
            "INTEL-SA-00615) is not allowed by the policy (allowed: UpToDate)"
        ],
        "mrenclave": "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
        "mrsigner": want["mrsigner"],
        "isv_prod_id": 0,
        "isv_svn": 0,
        "report_data": want["report_data"],
        "debug": False,
        "tcb_status": "ConfigurationAndSWHardeningNeeded",
        "advisory_ids": ["INTEL-SA-00289", "INTEL-SA-00615"],
        "simulation": False,
        "measurement": "real",
        "fmspc": "00a067110000",
        "checks": UP_TO_QE_IDENTITY,
        "quote_sha256": want["quote_sha256"],
    }


def test_a_wrong_mrenclave_shows_the_real_one(
    shared: Path, expected: dict[str, dict[str, Any]]
) -> None:
    want = expected["automata_sgx_v3"]
    out = verify_json(
        *quote_args(shared, "automata_sgx_v3", want["verify_at"]),
        "--allow-status",
        want["expected_tcb_status"],
        "--mrenclave",
        "11" * 32,
    )
    assert out["failed_check"] == "policy.mrenclave"
    assert out["mrenclave"] == want["mrenclave"]
    assert out["reasons"] == [
        f"enclave identity: MRENCLAVE {want['mrenclave']} is not the expected {'11' * 32}"
    ]
    assert out["tcb_status"] == want["expected_tcb_status"]
    assert out["advisory_ids"] == want["expected_advisory_ids"]
    assert out["checks"] == [*UP_TO_QE_IDENTITY, "tcb.status"]


@pytest.mark.parametrize(
    ("option", "value", "failed_check"),
    [
        ("--mrsigner", "22" * 32, "policy.mrsigner"),
        ("--isv-prod-id", "5", "policy.isv_prod_id"),
        ("--min-isv-svn", "1", "policy.isv_svn"),
    ],
)
def test_other_identity_mismatches(
    shared: Path, expected: dict[str, dict[str, Any]], option: str, value: str, failed_check: str
) -> None:
    want = expected["phala_sgx_v3"]
    out = verify_json(
        *quote_args(shared, "phala_sgx_v3", want["verify_at"]),
        "--allow-status",
        want["expected_tcb_status"],
        option,
        value,
    )
    assert out["failed_check"] == failed_check
    assert (out["mrenclave"], out["mrsigner"]) == (want["mrenclave"], want["mrsigner"])


@pytest.mark.parametrize(
    ("at", "failed_check", "last_check"),
    [
        ("2023-09-01T00:00:00Z", "pck.chain.not_yet_valid", "quote.format"),
        ("2025-07-19T10:10:00Z", "collateral.qe_identity.expired", "collateral.platform"),
        ("2025-07-19T11:00:00Z", "collateral.tcb_info.expired", "collateral.platform"),
        ("2025-06-19T10:30:00Z", "collateral.tcb_info.not_yet_valid", "collateral.platform"),
    ],
)
def test_must_fail_times(
    shared: Path, expected: dict[str, dict[str, Any]], at: str, failed_check: str, last_check: str
) -> None:
    want = expected["phala_sgx_v3"]
    assert at in [item["at"] for item in want["must_fail_at"] + want["oracle_also_rejects_at"]]
    out = verify_json(
        *quote_args(shared, "phala_sgx_v3", at), "--allow-status", want["expected_tcb_status"]
    )
    assert out["failed_check"] == failed_check
    assert out["checks"][-1] == last_check
    # The TCB level is never evaluated with out-of-date collateral.
    assert (out["tcb_status"], out["advisory_ids"]) == (None, None)
    # Nor is the identity established: without fresh collateral neither the PCK's revocation nor
    # the quoting enclave was checked, so the key that signed the quote is not yet trusted.
    assert out["mrenclave"] is None and out["mrsigner"] is None and out["report_data"] is None
    if last_check == "collateral.platform":
        assert out["fmspc"] == want["fmspc"]
    else:
        assert out["fmspc"] is None


def test_stale_pck_crl(shared: Path, expected: dict[str, dict[str, Any]]) -> None:
    want = expected["mobilecoin_sgx_v3"]
    out = verify_json(
        *quote_args(shared, "mobilecoin_sgx_v3", want["verify_at"]),
        "--allow-status",
        want["expected_tcb_status"],
    )
    assert out["failed_check"] == "collateral.pck_crl.expired"
    assert out["mrenclave"] is None  # revocation unchecked: the signer is not trusted yet
    assert out["quote_sha256"] == want["quote_sha256"]


def test_tampered_quote(shared: Path, expected: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    want = expected["phala_sgx_v3"]
    tampered = bytearray((shared / "phala_sgx_v3" / "quote.bin").read_bytes())
    tampered[48 + 64] ^= 0x01  # MRENCLAVE's first byte
    path = tmp_path / "tampered.bin"
    path.write_bytes(bytes(tampered))
    args = ["--quote", path, "--collateral", shared / "phala_sgx_v3", "--at", want["verify_at"]]
    out = verify_json(*args)
    assert out["failed_check"] == "quote.signature"
    # Not genuine: the quote's claimed identity is not reported as found.
    assert out["mrenclave"] is None and out["tcb_status"] is None
    assert out["fmspc"] == want["fmspc"]
    assert out["checks"] == UP_TO_QE_IDENTITY[:4]
    # The hash names the bytes that were checked (the tampered ones), and claims nothing.
    assert out["quote_sha256"] == hashlib.sha256(bytes(tampered)).hexdigest()


def test_tdx_quote(shared: Path) -> None:
    out = verify_json(*quote_args(shared, "phala_tdx_v4", "2025-07-01T00:00:00Z"))
    assert out["failed_check"] == "quote.unsupported"
    assert out["checks"] == []


def test_gramine_certificate(shared: Path, expected: dict[str, dict[str, Any]]) -> None:
    cross = expected["gramine_ratls"]["cross_collateral"]
    args: list[str | Path] = ["--cert", shared / "gramine_ratls" / "cert.pem"]
    args += ["--collateral", shared / cross["collateral_case"]]
    out = verify_json(*args, "--at", cross["verify_at"])
    assert out["failed_check"] == "policy.tcb_status"
    assert out["tcb_status"] == "OutOfDate"
    assert out["mrenclave"] == expected["gramine_ratls"]["mrenclave"]
    assert out["checks"] == [
        "ratls.self_signature",
        "ratls.validity",
        *UP_TO_QE_IDENTITY,
        "ratls.key_binding:spki-sha256",
    ]
    out = verify_json(*args, "--at", "2031-06-01T00:00:00Z")
    assert out["failed_check"] == "ratls.expired"
    assert out["checks"] == ["ratls.self_signature"]


def test_unreachable_server() -> None:
    out = verify_json(f"https://127.0.0.1:{free_port()}")
    assert out["failed_check"] == "ratls.unreachable"
    assert out["checks"] == [] and out["mrenclave"] is None and out["simulation"] is False
    assert out["quote_sha256"] is None


def test_verified_has_the_same_keys(shared: Path, expected: dict[str, dict[str, Any]]) -> None:
    want = expected["automata_sgx_v3"]
    out = verify_json(
        *quote_args(shared, "automata_sgx_v3", want["verify_at"]),
        "--allow-status",
        want["expected_tcb_status"],
        status=0,
    )
    assert out["failed_check"] is None and out["reasons"] == []
    assert out["debug"] is False and out["fmspc"] == want["fmspc"]
    assert out["checks"] == [*UP_TO_QE_IDENTITY, "tcb.status", "enclave.identity"]
