"""``mse-verify`` as a user runs it: a real subprocess, real files, a real TLS server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import ratls
from mse_base._internal.simulation.pki import SimulationPKI, SimulationQuoteProvider
from tests.certs import bad_trust_roots, write_private_key
from tests.pins import PINNED_JSON_FIELDS

from .conftest import SHARED

MSE_VERIFY = Path(sys.executable).with_name("mse-verify")
MRENCLAVE = hashlib.sha256(b"cli app").digest()
MRSIGNER = hashlib.sha256(b"cli signer").digest()


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MSE_VERIFY), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def run_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    proc = run(*args, "--json")
    return proc.returncode, json.loads(proc.stdout)


JSON_KEYS = set(PINNED_JSON_FIELDS)

SGX_CASES = ["phala_sgx_v3", "automata_sgx_v3"]
REAL_QUOTE = str(SHARED / "phala_sgx_v3" / "quote.bin")


@pytest.mark.parametrize("case", SGX_CASES)
def test_quote_with_collateral_gives_expected_verdict(
    shared: Path, expected: dict[str, dict[str, Any]], case: str
) -> None:
    want = expected[case]
    common: list[str | Path] = ["--quote", shared / case / "quote.bin"]
    common += ["--collateral", shared / case]
    common += ["--at", want["verify_at"]]
    # Not UpToDate, so the default policy rejects: exit 1, the reason names the status.
    code, out = run_json(*common)
    assert code == 1
    assert out["verified"] is False
    assert set(out) == JSON_KEYS
    assert want["expected_tcb_status"] in out["reasons"][0]
    # Allowed by name: verified, with every field of the oracle.
    code, out = run_json(
        *common,
        "--allow-status",
        want["expected_tcb_status"],
        "--mrenclave",
        "00" * 32,
        "--mrenclave",
        want["mrenclave"],
        "--mrsigner",
        want["mrsigner"],
        "--isv-prod-id",
        str(want["isv_prod_id"]),
        "--min-isv-svn",
        str(want["isv_svn"]),
    )
    assert code == 0, out
    assert set(out) == JSON_KEYS
    assert out["verified"] is True and out["reasons"] == []
    assert out["mrenclave"] == want["mrenclave"]
    assert out["mrsigner"] == want["mrsigner"]
    assert out["report_data"] == want["report_data"]
    assert (out["isv_prod_id"], out["isv_svn"]) == (want["isv_prod_id"], want["isv_svn"])
    assert out["tcb_status"] == want["expected_tcb_status"]
    assert sorted(out["advisory_ids"]) == sorted(want["expected_advisory_ids"])
    assert out["simulation"] is False
    assert "quote.signature" in out["checks"]


@pytest.mark.parametrize("case", SGX_CASES)
def test_must_fail_times_are_rejected(
    shared: Path, expected: dict[str, dict[str, Any]], case: str
) -> None:
    want = expected[case]
    for failure in want["must_fail_at"]:
        proc = run(
            "--quote",
            shared / case / "quote.bin",
            "--collateral",
            shared / case,
            "--at",
            failure["at"],
            "--allow-status",
            want["expected_tcb_status"],
        )
        assert proc.returncode == 1, failure
        assert proc.stderr.startswith("mse-verify: error: "), proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_mobilecoin_needs_the_insecure_stale_crl_option(
    shared: Path, expected: dict[str, dict[str, Any]]
) -> None:
    want = expected["mobilecoin_sgx_v3"]
    args: list[str | Path] = ["--quote", shared / "mobilecoin_sgx_v3" / "quote.bin"]
    args += ["--collateral", shared / "mobilecoin_sgx_v3", "--at", want["verify_at"]]
    args += ["--allow-status", want["expected_tcb_status"]]
    code, out = run_json(*args)
    assert code == 1 and "CRL" in out["reasons"][0]
    code, out = run_json(*args, "--insecure-allow-stale-crl")
    assert code == 0, out
    assert out["tcb_status"] == want["expected_tcb_status"]


def test_tdx_quote_refused_as_unsupported(shared: Path) -> None:
    proc = run(
        "--quote",
        shared / "phala_tdx_v4" / "quote.bin",
        "--collateral",
        shared / "phala_tdx_v4",
        "--at",
        "2025-07-01T00:00:00Z",
    )
    assert proc.returncode == 1
    assert "TDX" in proc.stderr


def test_gramine_certificate(shared: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved.pem"
    code, out = run_json(
        "--cert",
        shared / "gramine_ratls" / "cert.pem",
        "--collateral",
        shared / "automata_sgx_v3",
        "--at",
        "2025-09-01T00:00:00Z",
        "--allow-status",
        "OutOfDate",
        "--save-cert",
        saved,
    )
    assert code == 0, out
    assert out["tcb_status"] == "OutOfDate"
    assert out["mrenclave"] == "f94ccbe6a504676b2edbefdcb8781a512913f7d8864c6f88592a843d0f9d4a66"
    assert "ratls.key_binding:spki-sha256" in out["checks"]
    # Saved byte for byte as presented: loading normalises this mbedTLS certificate, and a
    # re-encoded copy would no longer verify as its own issuer.
    original = (shared / "gramine_ratls" / "cert.pem").read_text()
    assert ssl.PEM_cert_to_DER_cert(saved.read_text()) == ssl.PEM_cert_to_DER_cert(original)


def test_human_output_and_wrong_mrenclave(shared: Path) -> None:
    args: list[str | Path] = ["--quote", shared / "automata_sgx_v3" / "quote.bin"]
    args += ["--collateral", shared / "automata_sgx_v3", "--at", "2025-09-01T00:00:00Z"]
    args += ["--allow-status", "SWHardeningNeeded"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd" in proc.stdout
    assert "SIMULATION" not in proc.stdout
    # Nothing pinned: verified, but the user is told that any genuine enclave would pass.
    assert "no --mrenclave or --mrsigner" in proc.stderr
    pinned = run(
        *args, "--mrenclave", "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd"
    )
    assert pinned.returncode == 0, pinned.stderr
    assert "no --mrenclave" not in pinned.stderr
    proc = run(*args, "--mrenclave", "11" * 32)
    assert proc.returncode == 1
    assert "MRENCLAVE" in proc.stderr.upper()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required"),
        (["--quote", "q", "--cert", "c"], "not allowed"),
        (["--quote", "/nonexistent/quote.bin", "--collateral", "/tmp"], "/nonexistent/quote.bin"),
        (["--quote", "x", "--mrenclave", "abc"], "--mrenclave"),
        (["--quote", "x", "--mrsigner", "zz" * 32], "--mrsigner"),
        (["--quote", "x", "--at", "yesterday"], "--at"),
        # Policy checks the values; the line names the option (and says what Policy said).
        (["--quote", "x", "--isv-prod-id", "70000"], "--isv-prod-id 70000: expected an integer"),
        (["--quote", "x", "--min-isv-svn", "-1"], "--min-isv-svn -1: expected an integer"),
        (["--quote", REAL_QUOTE, "--collateral", "/nonexistent-dir"], "/nonexistent-dir"),
        (["--quote", "x", "--collateral", "d", "--pccs-url", "http://x"], "not allowed"),
        (["--quote", REAL_QUOTE, "--pccs-url", "ftp://x"], "--pccs-url"),
        (["--quote", REAL_QUOTE, "--simulation-ca", "/nonexistent.pem"], "/nonexistent.pem"),
        (["ftp://host:1"], "https"),
        (["--quote", REAL_QUOTE, "--allow-status", "Revoked"], "--allow-status Revoked: Revoked"),
        (["--cert", REAL_QUOTE], "--cert"),
        ([f"https://{'a' * 64}.example"], "not a valid DNS name"),
        (
            [
                "--quote",
                REAL_QUOTE,
                "--collateral",
                SHARED / "phala_sgx_v3",
                "--allow-status",
                "Bogus",
            ],
            "--allow-status Bogus: unknown ['Bogus']",
        ),
    ],
)
def test_usage_errors_exit_2(args: list[str | Path], needle: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["not a CA", "RSA", "P-384", "not self-signed"])
def test_a_bad_simulation_ca_is_one_usage_line(kind: str, tmp_path: Path) -> None:
    """Every kind of bad --simulation-ca: exit 2, one line naming the option, what is wrong and
    the fix, no JSON even with --json (nothing was verified), nothing written beside it."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(bad_trust_roots()[kind].public_bytes(serialization.Encoding.PEM))
    proc = run("--quote", REAL_QUOTE, "--simulation-ca", ca, "--json")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mse-verify: error: --simulation-ca {ca}: trust root (bad root): ")
    assert lines[0].endswith("ca.pem)") and "pass the ca.pem of the simulation" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]


def test_the_intel_root_as_simulation_ca_is_a_usage_error(shared: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    intel = x509.load_der_x509_certificate((shared / "intel_sgx_root_ca.der").read_bytes())
    ca.write_bytes(intel.public_bytes(serialization.Encoding.PEM))
    proc = run("--quote", REAL_QUOTE, "--simulation-ca", ca, "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "is the Intel SGX Root CA" in proc.stderr and "drop --simulation-ca" in proc.stderr


def test_garbage_quote_is_rejected_not_crashed(shared: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x03\x00" + b"\xff" * 100)
    proc = run("--quote", bad, "--collateral", shared / "phala_sgx_v3")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    proc = run("--quote", bad, "--collateral", shared / "phala_sgx_v3", "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


# --- a live RA-TLS server -----------------------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"hello from the simulated enclave\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve_tls(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, tmp: Path) -> Any:
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private_key(key_path, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def ratls_server(sim_pki: SimulationPKI, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    provider = SimulationQuoteProvider(
        mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=sim_pki.directory
    )
    cert = ratls.build_certificate(
        key=key,
        host="127.0.0.1",
        deployment_id=uuid.uuid4(),
        not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
        quote=provider.quote(ratls.report_data_for_key(key.public_key())),
    )
    server = _serve_tls(cert, key, tmp_path)
    try:
        yield server.server_address[1], tmp_path / "server.pem"
    finally:
        server.shutdown()
        server.server_close()


def test_live_simulation_server(
    sim_pki: SimulationPKI, ratls_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = ratls_server
    saved = tmp_path / "fetched.pem"
    url = f"https://127.0.0.1:{port}"
    proc = run(
        url,
        "--simulation-ca",
        sim_pki.ca_pem_path,
        "--mrenclave",
        MRENCLAVE.hex(),
        "--mrsigner",
        MRSIGNER.hex(),
        "--save-cert",
        saved,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATION — NOT a real SGX enclave" in proc.stdout
    assert MRENCLAVE.hex() in proc.stdout
    proc = run(url, "--simulation-ca", sim_pki.ca_pem_path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATION — NOT a real SGX enclave" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["simulation"] is True
    assert out["mrenclave"] == MRENCLAVE.hex()
    # The saved certificate is the server's trust anchor for curl.
    curl = subprocess.run(
        ["curl", "--silent", "--show-error", "--cacert", str(saved), f"{url}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout == "hello from the simulated enclave\n"
    s_client = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(saved),
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert s_client.returncode == 0, s_client.stderr
    assert "Verify return code: 0 (ok)" in s_client.stdout


def test_live_simulation_server_rejected_without_simulation_ca(
    ratls_server: tuple[int, Path], sim_pki: SimulationPKI, tmp_path: Path
) -> None:
    port, _ = ratls_server
    url = f"https://127.0.0.1:{port}"
    # Against Intel's root (with the simulation collateral, so only the root differs).
    proc = run(url, "--collateral", sim_pki.collateral_dir)
    assert proc.returncode == 1
    assert "root" in proc.stderr.lower()
    # Wrong expected measurement.
    proc = run(url, "--simulation-ca", sim_pki.ca_pem_path, "--mrenclave", "22" * 32)
    assert proc.returncode == 1


def test_unreachable_server_is_rejected() -> None:
    proc = run("https://127.0.0.1:9")
    assert proc.returncode == 1
    assert "cannot fetch the certificate" in proc.stderr


def test_a_simulation_pki_that_cannot_refresh_exits_3(tmp_path: Path) -> None:
    """Stale collateral beside --simulation-ca and a damaged signing key: mse-verify cannot run
    (exit 3, as the README says), in one line naming the option and the fix."""
    from mse_base._internal.simulation.pki import ensure_simulation_pki

    pki = ensure_simulation_pki(tmp_path / "sim")
    quote_path = tmp_path / "quote.bin"
    quote_path.write_bytes(
        SimulationQuoteProvider(
            mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=pki.directory
        ).quote(bytes(64))
    )
    (pki.collateral_dir / "tcb_info.json").unlink()  # stale: to be re-issued
    (pki.directory / "tcb_signing.key").write_bytes(b"not a key")
    proc = run("--quote", quote_path, "--simulation-ca", pki.ca_pem_path, "--json")
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"mse-verify: error: --simulation-ca {pki.ca_pem_path}: ")
    assert "tcb_signing.key is not a PEM private key" in line
    assert f"delete {pki.directory} to recreate the simulation PKI" in line


def test_stale_simulation_collateral_is_refreshed_by_verify(tmp_path: Path) -> None:
    """A simulation enclave started long ago still verifies: mse-verify refreshes the collateral."""
    import shutil as _shutil

    from mse_base._internal.simulation.pki import ensure_simulation_pki

    pki = ensure_simulation_pki(tmp_path / "sim")
    quote_path = tmp_path / "quote.bin"
    quote_path.write_bytes(
        SimulationQuoteProvider(
            mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=pki.directory
        ).quote(bytes(64))
    )
    # Age the TCB info past its nextUpdate (this also breaks its signature: refused either way).
    stale = pki.collateral_dir / "tcb_info.json"
    stale.write_bytes(stale.read_bytes().replace(b'"nextUpdate":"2', b'"nextUpdate":"1'))
    # A copied ca.pem (no keys beside it) is used as is: the doctored TCB info is refused.
    copied = tmp_path / "copied"
    _shutil.copytree(pki.directory, copied, ignore=_shutil.ignore_patterns("*.key", ".lock"))
    proc = run("--quote", quote_path, "--simulation-ca", copied / "ca.pem")
    assert proc.returncode == 1
    # The owner's ca.pem: the collateral is re-issued, the quote verifies.
    proc = run("--quote", quote_path, "--simulation-ca", pki.ca_pem_path)
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATION" in proc.stdout


# --- --save-cert never replaces a file; a copied simulation ca.pem -------------------------

GRAMINE_CERT = SHARED / "gramine_ratls" / "cert.pem"
# The Gramine certificate verifies with automata's collateral at this time once OutOfDate is
# allowed; without that, it is rejected.
GRAMINE_ARGS: list[str | Path] = [
    "--cert",
    GRAMINE_CERT,
    "--collateral",
    SHARED / "automata_sgx_v3",
    "--at",
    "2025-09-01T00:00:00Z",
]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("mse-verify: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_save_cert_refuses_an_existing_file(tmp_path: Path) -> None:
    existing = tmp_path / "cert.pem"
    existing.write_bytes(b"the user's own file\n")
    before = existing.read_bytes()
    proc = run(*GRAMINE_ARGS, "--allow-status", "OutOfDate", "--save-cert", existing)
    line = assert_one_line_error(proc, 2)
    assert f"--save-cert {existing}" in line and "remove it or choose another path" in line
    assert existing.read_bytes() == before
    # Refused before any network access: an unreachable server is never tried.
    proc = run("https://127.0.0.1:9", "--save-cert", existing)
    assert "--save-cert" in assert_one_line_error(proc, 2)
    assert existing.read_bytes() == before
    # A symlink is not written through, even a dangling one.
    target = tmp_path / "target.pem"
    link = tmp_path / "link.pem"
    link.symlink_to(target)
    proc = run(*GRAMINE_ARGS, "--allow-status", "OutOfDate", "--save-cert", link)
    assert "--save-cert" in assert_one_line_error(proc, 2)
    assert not target.exists()


def test_save_cert_writes_a_new_file_even_when_rejected(tmp_path: Path) -> None:
    pem = GRAMINE_CERT.read_bytes()  # one PEM block: saved exactly as presented
    verified = tmp_path / "verified.pem"
    proc = run(*GRAMINE_ARGS, "--allow-status", "OutOfDate", "--save-cert", verified)
    assert proc.returncode == 0, proc.stderr
    assert verified.read_bytes() == pem
    umask = os.umask(0)
    os.umask(umask)
    assert verified.stat().st_mode & 0o777 == 0o644 & ~umask
    # Rejected (OutOfDate is not allowed): the evidence is kept, and the one error line says
    # it is not trusted.
    rejected = tmp_path / "rejected.pem"
    proc = run(*GRAMINE_ARGS, "--save-cert", rejected)
    line = assert_one_line_error(proc, 1)
    assert "OutOfDate" in line
    assert f"saved to {rejected}: do not trust it" in line
    assert rejected.read_bytes() == pem


def _unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores modes: try sysfs too)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for candidate in (locked, Path("/sys")):
        try:
            fd = os.open(candidate / "probe.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return candidate
        os.close(fd)
        (candidate / "probe.pem").unlink()
    pytest.skip("no directory here refuses file creation to this user")


def test_save_cert_in_an_unwritable_directory(tmp_path: Path) -> None:
    path = _unwritable_directory(tmp_path) / "cert.pem"
    proc = run(*GRAMINE_ARGS, "--allow-status", "OutOfDate", "--save-cert", path)
    line = assert_one_line_error(proc, 2)
    assert f"--save-cert {path}: cannot create it" in line
    assert not path.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--save-cert", "/nonexistent-dir/cert.pem"], "/nonexistent-dir is not a directory"),
        (["--quote", REAL_QUOTE, "--save-cert", "out.pem"], "--save-cert needs a certificate"),
    ],
)
def test_save_cert_usage_errors(extra: list[str], needle: str, tmp_path: Path) -> None:
    source: list[str | Path] = [] if "--quote" in extra else ["--cert", GRAMINE_CERT]
    proc = run(*source, "--collateral", SHARED / "automata_sgx_v3", *extra)
    assert needle in assert_one_line_error(proc, 2)


def test_copied_simulation_ca_without_collateral(sim_pki: SimulationPKI, tmp_path: Path) -> None:
    quote_path = tmp_path / "quote.bin"
    quote_path.write_bytes(
        SimulationQuoteProvider(
            mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=sim_pki.directory
        ).quote(bytes(64))
    )
    copied = tmp_path / "elsewhere" / "ca.pem"
    copied.parent.mkdir()
    copied.write_bytes(sim_pki.ca_pem_path.read_bytes())
    proc = run("--quote", quote_path, "--simulation-ca", copied)
    line = assert_one_line_error(proc, 2)
    assert f"--simulation-ca {copied}" in line
    assert str(copied.parent / "collateral") in line
    assert "--collateral DIR" in line
    assert "Intel PCS" not in line
    # The fix the line names works.
    proc = run(
        "--quote", quote_path, "--simulation-ca", copied, "--collateral", sim_pki.collateral_dir
    )
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATION" in proc.stdout


def test_library_warnings_do_not_reach_the_user(tmp_path: Path) -> None:
    """A damaged CRL makes cryptography warn; the user sees only the one error line."""
    import shutil

    collateral = tmp_path / "collateral"
    shutil.copytree(SHARED / "phala_sgx_v3", collateral)
    crl = bytearray((collateral / "pck_crl.der").read_bytes())
    crl[97] ^= 1
    (collateral / "pck_crl.der").write_bytes(bytes(crl))
    args = ["--quote", REAL_QUOTE, "--collateral", collateral, "--at", "2025-07-01T00:00:00Z"]
    line = assert_one_line_error(run(*args), 1)
    assert "PCK CRL" in line


@pytest.mark.parametrize(
    "variant",
    [
        lambda pem: pem.replace(b"\n", b"\r"),  # old Mac line endings
        lambda pem: pem.replace(b"-----BEGIN CERTIFICATE-----", b"-----BEGIN CERTIFICATE----- "),
    ],
    ids=["cr-line-endings", "space-after-begin"],
)
def test_save_cert_keeps_the_der_of_any_pem_it_accepts(
    tmp_path: Path, variant: Callable[[bytes], bytes]
) -> None:
    odd = tmp_path / "odd.pem"
    odd.write_bytes(variant(GRAMINE_CERT.read_bytes()))
    saved = tmp_path / "saved.pem"
    args = [a if a != GRAMINE_CERT else odd for a in GRAMINE_ARGS]
    proc = run(*args, "--allow-status", "OutOfDate", "--save-cert", saved)
    assert proc.returncode == 0, proc.stderr
    original = ssl.PEM_cert_to_DER_cert(GRAMINE_CERT.read_text())
    assert ssl.PEM_cert_to_DER_cert(saved.read_text()) == original
