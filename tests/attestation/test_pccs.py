"""PCCS / Intel PCS v4 collateral over real HTTP, served from the shared files by http.server."""

from __future__ import annotations

import datetime as dt
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.collateral import Collateral
from mse_base._internal.pccs import PCCSCollateralSource, collateral_cache_dir
from mse_base._internal.simulation import SIMULATION_FMSPC, SimulationPKI
from mse_base._internal.verify_errors import CollateralError

AT = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)


@dataclass
class FakePCS:
    """A PCS v4 layout over one collateral directory; records every request path."""

    directory: Path
    fmspc: str
    pck_ca_pem: bytes
    root_crl_hex: bool = True
    serve_root_crl: bool = True
    send_chain_headers: bool = True
    tcb_chain_header: str = "TCB-Info-Issuer-Chain"
    requests: list[str] = field(default_factory=list)
    url: str = ""


def _handler(pcs: FakePCS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, body: bytes, headers: dict[str, bytes] | None = None) -> None:
            self.send_response(200)
            for name, value in (headers or {}).items():
                if pcs.send_chain_headers:
                    self.send_header(name, urllib.parse.quote(value.decode()))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            pcs.requests.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            d = pcs.directory
            chain = (d / "tcb_info_issuer_chain.pem").read_bytes()
            root_pem = x509.load_pem_x509_certificates(chain)[-1].public_bytes(
                serialization.Encoding.PEM
            )
            if url.path == "/sgx/certification/v4/tcb" and query.get("fmspc") == pcs.fmspc:
                self._send((d / "tcb_info.json").read_bytes(), {pcs.tcb_chain_header: chain})
            elif url.path == "/sgx/certification/v4/qe/identity":
                self._send(
                    (d / "qe_identity.json").read_bytes(),
                    {"SGX-Enclave-Identity-Issuer-Chain": chain},
                )
            elif url.path == "/sgx/certification/v4/pckcrl" and query.get("encoding") == "der":
                self._send(
                    (d / "pck_crl.der").read_bytes(),
                    {"SGX-PCK-CRL-Issuer-Chain": pcs.pck_ca_pem + root_pem},
                )
            elif url.path == "/sgx/certification/v4/rootcacrl" and pcs.serve_root_crl:
                der = (d / "root_ca_crl.der").read_bytes()
                self._send(der.hex().encode() if pcs.root_crl_hex else der)
            elif url.path == "/IntelSGXRootCA.der":
                self._send((d / "root_ca_crl.der").read_bytes())
            else:
                self.send_error(404, "Not Found")

    return Handler


def _pck_ca_pem(quote: bytes) -> bytes:
    certs = x509.load_pem_x509_certificates(quote[quote.index(b"-----BEGIN") :])
    return certs[1].public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def serve() -> Iterator[Callable[[FakePCS], FakePCS]]:
    servers: list[ThreadingHTTPServer] = []

    def start(pcs: FakePCS) -> FakePCS:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pcs))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        pcs.url = f"http://127.0.0.1:{server.server_address[1]}"
        return pcs

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mse" / "collateral"


@pytest.fixture
def phala(shared: Path, serve: Callable[[FakePCS], FakePCS]) -> FakePCS:
    d = shared / "phala_sgx_v3"
    return serve(FakePCS(d, "00a067110000", _pck_ca_pem((d / "quote.bin").read_bytes())))


@pytest.fixture
def sim(sim_pki: SimulationPKI, serve: Callable[[FakePCS], FakePCS]) -> FakePCS:
    return serve(
        FakePCS(sim_pki.collateral_dir, SIMULATION_FMSPC, _pck_ca_pem(sim_pki.pck_chain_pem))
    )


def test_cache_dir_honours_xdg(cache: Path) -> None:
    assert collateral_cache_dir() == cache


def test_fetches_pcs_layout_byte_for_byte(shared: Path, phala: FakePCS, cache: Path) -> None:
    source = PCCSCollateralSource(phala.url)
    got = source.collateral_for(fmspc="00A067110000", pck_ca="processor", at=AT)
    want = Collateral.from_directory(shared / "phala_sgx_v3")
    assert got == want
    assert sorted(phala.requests) == sorted(
        [
            "/sgx/certification/v4/tcb?fmspc=00a067110000",
            "/sgx/certification/v4/qe/identity",
            "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
            "/sgx/certification/v4/rootcacrl",
        ]
    )


def test_expired_items_are_fetched_again(phala: FakePCS, cache: Path) -> None:
    # Everything in phala's collateral is past nextUpdate today, so nothing may be reused.
    source = PCCSCollateralSource(phala.url)
    source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert len(phala.requests) == 8
    assert source.requests_made == 8


def test_fresh_items_come_from_the_disk_cache(sim: FakePCS, cache: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    first = PCCSCollateralSource(sim.url).collateral_for(
        fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now
    )
    assert len(sim.requests) == 4
    assert len(list(cache.glob("*.json"))) == 4
    # A new source (a new process, say) reuses the cache: no request at all.
    again = PCCSCollateralSource(sim.url)
    assert again.collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now) == first
    assert len(sim.requests) == 4
    assert again.requests_made == 0
    # With the cache disabled, it asks again.
    uncached = PCCSCollateralSource(sim.url, use_cache=False)
    uncached.collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now)
    assert len(sim.requests) == 8


def test_cache_entry_expires_at_next_update(sim: FakePCS, cache: Path) -> None:
    import json

    now = dt.datetime.now(dt.timezone.utc)
    PCCSCollateralSource(sim.url).collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now)
    # Age one entry past its nextUpdate: exactly that one is fetched again.
    entry_path = sorted(cache.glob("*.json"))[0]
    entry = json.loads(entry_path.read_text())
    entry["next_update"] = "2020-01-01T00:00:00Z"
    entry_path.write_text(json.dumps(entry))
    PCCSCollateralSource(sim.url).collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now)
    assert len(sim.requests) == 5
    assert sim.url + sim.requests[4] == entry["url"]


def test_root_crl_as_der_and_404_fallback(shared: Path, phala: FakePCS, cache: Path) -> None:
    want = (shared / "phala_sgx_v3" / "root_ca_crl.der").read_bytes()
    phala.root_crl_hex = False
    got = PCCSCollateralSource(phala.url).collateral_for(
        fmspc="00a067110000", pck_ca="processor", at=AT
    )
    assert got.root_ca_crl == want
    phala.serve_root_crl = False
    source = PCCSCollateralSource(phala.url, root_ca_crl_url=f"{phala.url}/IntelSGXRootCA.der")
    got = source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert got.root_ca_crl == want
    assert phala.requests[-1] == "/IntelSGXRootCA.der"


def test_unknown_fmspc_is_a_collateral_error(phala: FakePCS, cache: Path) -> None:
    with pytest.raises(CollateralError, match="HTTP 404"):
        PCCSCollateralSource(phala.url).collateral_for(
            fmspc="00906ed50000", pck_ca="processor", at=AT
        )


def test_missing_issuer_chain_header(phala: FakePCS, cache: Path) -> None:
    phala.send_chain_headers = False
    with pytest.raises(CollateralError, match="TCB-Info-Issuer-Chain"):
        PCCSCollateralSource(phala.url).collateral_for(
            fmspc="00a067110000", pck_ca="processor", at=AT
        )


def test_bad_arguments_and_unreachable_service(cache: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        PCCSCollateralSource("ftp://example")
    source = PCCSCollateralSource("http://127.0.0.1:9", timeout=5)
    with pytest.raises(CollateralError, match="FMSPC"):
        source.collateral_for(fmspc="zz", pck_ca="processor", at=AT)
    with pytest.raises(CollateralError, match="PCK CA"):
        source.collateral_for(fmspc="00a067110000", pck_ca="other", at=AT)
    with pytest.raises(CollateralError, match="cannot reach"):
        source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)


def test_verifier_with_pccs_source(
    shared: Path, expected: dict[str, dict[str, object]], phala: FakePCS, cache: Path
) -> None:
    from mse_base.verify import Policy, Verifier

    want = expected["phala_sgx_v3"]
    status = str(want["expected_tcb_status"])
    verifier = Verifier(
        collateral=PCCSCollateralSource(phala.url),
        policy=Policy(allowed_tcb_statuses=frozenset({"UpToDate", status})),
    )
    result = verifier.verify_quote((shared / "phala_sgx_v3" / "quote.bin").read_bytes(), at=AT)
    assert result.tcb_status == status
    advisories = want["expected_advisory_ids"]
    assert isinstance(advisories, list)
    assert sorted(result.advisory_ids) == sorted(advisories)
    assert "/sgx/certification/v4/pckcrl?ca=processor&encoding=der" in phala.requests


def test_cli_with_pccs_url(shared: Path, phala: FakePCS, cache: Path) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("mse-verify")),
            "--quote",
            str(shared / "phala_sgx_v3" / "quote.bin"),
            "--pccs-url",
            phala.url,
            "--at",
            "2025-07-01T00:00:00Z",
            "--allow-status",
            "ConfigurationAndSWHardeningNeeded",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert len(phala.requests) == 4


def test_v3_style_tcb_chain_header_is_accepted(shared: Path, phala: FakePCS, cache: Path) -> None:
    phala.tcb_chain_header = "SGX-TCB-Info-Issuer-Chain"
    got = PCCSCollateralSource(phala.url).collateral_for(
        fmspc="00a067110000", pck_ca="processor", at=AT
    )
    assert (
        got.tcb_info_issuer_chain
        == (shared / "phala_sgx_v3" / "tcb_info_issuer_chain.pem").read_bytes()
    )


def test_qcnl_style_url_is_accepted(phala: FakePCS, cache: Path) -> None:
    source = PCCSCollateralSource(phala.url + "/sgx/certification/v4/")
    source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert "/sgx/certification/v4/qe/identity" in phala.requests
