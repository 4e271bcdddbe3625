"""PCCS / Intel PCS v4 collateral over real HTTP, served from the shared files by http.server."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.dcap.collateral import Collateral
from mse_base._internal.dcap.errors import CollateralError
from mse_base._internal.dcap.pccs import PCCSCollateralSource, collateral_cache_dir
from mse_base._internal.simulation.pki import (
    SIMULATION_FMSPC,
    SimulationPKI,
    SimulationQuoteProvider,
)
from tests.bounded import DEADLINE, within
from tests.certs import self_signed_pem

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
    # A bad signature under a far-future nextUpdate: a PCCS mid-upgrade, or a MITM on http://.
    broken_tcb: bool = False
    # Answer every request with a 302 to this base URL (same path).
    redirect_to: str = ""
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
            if pcs.redirect_to:
                self.send_response(302)
                self.send_header("Location", pcs.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            d = pcs.directory
            chain = (d / "tcb_info_issuer_chain.pem").read_bytes()
            root_pem = x509.load_pem_x509_certificates(chain)[-1].public_bytes(
                serialization.Encoding.PEM
            )
            if url.path == "/sgx/certification/v4/tcb" and query.get("fmspc") == pcs.fmspc:
                body = (d / "tcb_info.json").read_bytes()
                self._send(_broken(body) if pcs.broken_tcb else body, {pcs.tcb_chain_header: chain})
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


def _broken(tcb_info: bytes) -> bytes:
    body = tcb_info.replace(b'"signature":"', b'"signature":"00')[:-4] + b'"}'
    return body.replace(b'"nextUpdate":"', b'"nextUpdate":"2099-01-01T00:00:00Z","x":"', 1)


def _pck_ca_pem(quote: bytes) -> bytes:
    certs = x509.load_pem_x509_certificates(quote[quote.index(b"-----BEGIN") :])
    return certs[1].public_bytes(serialization.Encoding.PEM)


Serve = Callable[..., FakePCS]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ThreadingHTTPServer] = []

    def start(pcs: FakePCS, tls: ssl.SSLContext | None = None) -> FakePCS:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pcs))
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        scheme = "https" if tls is not None else "http"
        pcs.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
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
def phala(shared: Path, serve: Serve) -> FakePCS:
    d = shared / "phala_sgx_v3"
    return serve(FakePCS(d, "00a067110000", _pck_ca_pem((d / "quote.bin").read_bytes())))


@pytest.fixture
def sim(sim_pki: SimulationPKI, serve: Serve) -> FakePCS:
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


def _sim_source(pki: SimulationPKI, url: str, **kwargs: Any) -> PCCSCollateralSource:
    """A source whose answers must chain to the simulation CA (to be cached)."""
    return PCCSCollateralSource(url, trust_root=pki.ca_certificate, **kwargs)


def _sim_fetch(source: PCCSCollateralSource) -> Collateral:
    now = dt.datetime.now(dt.timezone.utc)
    return source.collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=now)


def test_fresh_items_come_from_the_disk_cache(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    first = _sim_fetch(_sim_source(sim_pki, sim.url))
    assert len(sim.requests) == 4
    assert len(list(cache.glob("*.json"))) == 4
    # A new source (a new process, say) reuses the cache: no request at all.
    again = _sim_source(sim_pki, sim.url)
    assert _sim_fetch(again) == first
    assert len(sim.requests) == 4
    assert again.requests_made == 0
    # With the cache disabled, it asks again.
    _sim_fetch(_sim_source(sim_pki, sim.url, use_cache=False))
    assert len(sim.requests) == 8


def test_cache_entries_belong_to_the_root_they_were_vetted_under(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    _sim_fetch(_sim_source(sim_pki, sim.url))
    assert len(list(cache.glob("*.json"))) == 4
    # Same URL, Intel's root: the simulation-vetted entries are not served to it.
    intel = PCCSCollateralSource(sim.url)
    _sim_fetch(intel)
    assert intel.requests_made == 4


def test_items_not_under_the_trust_root_are_not_cached(sim: FakePCS, cache: Path) -> None:
    # The default root is Intel's: simulated collateral is returned but never stored.
    source = PCCSCollateralSource(sim.url)
    got = _sim_fetch(source)
    assert got == Collateral.from_directory(sim.directory)
    assert not cache.exists() or not list(cache.glob("*.json"))
    _sim_fetch(source)
    assert source.requests_made == 8


def test_cache_entry_expires_at_next_update(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    _sim_fetch(_sim_source(sim_pki, sim.url))
    # The stored nextUpdate is the signed one of each document.
    signed = json.loads((sim.directory / "tcb_info.json").read_bytes())["tcbInfo"]["nextUpdate"]
    entries = {json.loads(p.read_text())["url"]: p for p in cache.glob("*.json")}
    tcb_url = f"{sim.url}/sgx/certification/v4/tcb?fmspc={SIMULATION_FMSPC}"
    assert json.loads(entries[tcb_url].read_text())["next_update"] == signed
    # Age one entry past its nextUpdate: exactly that one is fetched again.
    entry_path = sorted(cache.glob("*.json"))[0]
    entry = json.loads(entry_path.read_text())
    entry["next_update"] = "2020-01-01T00:00:00Z"
    entry_path.write_text(json.dumps(entry))
    _sim_fetch(_sim_source(sim_pki, sim.url))
    assert len(sim.requests) == 5
    assert sim.url + sim.requests[4] == entry["url"]


def test_cached_items_last_at_most_24_hours(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    start = dt.datetime.now(dt.timezone.utc)
    clock = [start]

    def source() -> PCCSCollateralSource:
        return _sim_source(sim_pki, sim.url, now=lambda: clock[0])

    _sim_fetch(source())
    assert len(sim.requests) == 4
    # The simulation signs for 30 days, so only the 24 h cap can expire the entries.
    paths = list(cache.glob("*.json"))
    assert len(paths) == 4
    for path in paths:
        next_update = dt.datetime.strptime(
            json.loads(path.read_text())["next_update"], "%Y-%m-%dT%H:%M:%SZ"
        ).replace(tzinfo=dt.timezone.utc)
        assert next_update > start + dt.timedelta(days=2)
    clock[0] = start + dt.timedelta(hours=23, minutes=59)
    assert source().collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=start)
    assert len(sim.requests) == 4
    clock[0] = start + dt.timedelta(hours=24, seconds=1)
    later = source()
    later.collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=start)
    assert later.requests_made == 4
    # An entry dated in the future (clock set back, or hand-edited) is not trusted either.
    clock[0] = start
    earlier = source()
    earlier.collateral_for(fmspc=SIMULATION_FMSPC, pck_ca="processor", at=start)
    assert earlier.requests_made == 4


def test_a_bad_answer_is_returned_but_not_cached(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    from mse_base.verify import Policy, Verifier

    quote = SimulationQuoteProvider(
        mrenclave=b"\x11" * 32, mrsigner=b"\x22" * 32, directory=sim_pki.directory
    ).quote(bytes(64))

    def verify() -> PCCSCollateralSource:
        source = _sim_source(sim_pki, sim.url)
        Verifier(
            collateral=source, policy=Policy(), trust_root=sim_pki.ca_certificate, simulation=True
        ).verify_quote(quote)
        return source

    sim.broken_tcb = True
    with pytest.raises(CollateralError, match="TCB info: signature does not verify"):
        verify()
    assert len(sim.requests) == 4
    # The other three verified and were cached; the broken TCB info was not.
    tcb_path = f"/sgx/certification/v4/tcb?fmspc={SIMULATION_FMSPC}"
    cached_urls = {json.loads(p.read_text())["url"] for p in cache.glob("*.json")}
    assert len(cached_urls) == 3
    assert sim.url + tcb_path not in cached_urls
    # The service is fixed: the next verification asks for the TCB info again, and succeeds.
    sim.broken_tcb = False
    assert verify().requests_made == 1
    assert sim.requests[4] == tcb_path
    # Now it is cached too.
    assert verify().requests_made == 0


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda e: b"{not json",
        lambda e: json.dumps([e]).encode(),
        lambda e: json.dumps({**e, "headers": [["TCB-Info-Issuer-Chain", "x"]]}).encode(),
        lambda e: json.dumps({**e, "headers": {"TCB-Info-Issuer-Chain": 1}}).encode(),
        lambda e: json.dumps({**e, "headers": {"X-Other": "x"}}).encode(),
        lambda e: json.dumps({**e, "body": 7}).encode(),
        lambda e: json.dumps({**e, "body": "not base64!"}).encode(),
        lambda e: json.dumps({**e, "next_update": 2099}).encode(),
        lambda e: json.dumps({k: v for k, v in e.items() if k != "fetched_at"}).encode(),
        lambda e: json.dumps({**e, "fetched_at": "yesterday"}).encode(),
        lambda e: b"\xff\xfe",
    ],
    ids=[
        "not-json",
        "not-object",
        "headers-list",
        "header-int",
        "unknown-header",
        "body-int",
        "body-not-base64",
        "next-update-int",
        "no-fetched-at",
        "bad-fetched-at",
        "not-utf8",
    ],
)
def test_a_corrupt_cache_entry_is_a_miss(
    sim_pki: SimulationPKI,
    sim: FakePCS,
    cache: Path,
    corrupt: Callable[[dict[str, Any]], bytes],
) -> None:
    first = _sim_fetch(_sim_source(sim_pki, sim.url))
    tcb_url = f"{sim.url}/sgx/certification/v4/tcb?fmspc={SIMULATION_FMSPC}"
    path = next(p for p in cache.glob("*.json") if json.loads(p.read_text())["url"] == tcb_url)
    path.write_bytes(corrupt(json.loads(path.read_text())))
    again = _sim_source(sim_pki, sim.url)
    assert _sim_fetch(again) == first
    assert again.requests_made == 1
    assert sim.url + sim.requests[-1] == tcb_url
    # The fetched answer replaced the corrupt entry.
    third = _sim_source(sim_pki, sim.url)
    _sim_fetch(third)
    assert third.requests_made == 0
    assert json.loads(path.read_text())["url"] == tcb_url


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_a_cache_dir_others_can_write_is_not_used(
    sim_pki: SimulationPKI,
    sim: FakePCS,
    cache: Path,
    mode: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _sim_fetch(_sim_source(sim_pki, sim.url))
    assert len(list(cache.glob("*.json"))) == 4
    cache.chmod(mode)
    caplog.set_level(logging.WARNING, logger="mse_base._internal.dcap.pccs")
    caplog.clear()
    source = _sim_source(sim_pki, sim.url)
    _sim_fetch(source)
    _sim_fetch(source)
    # Neither read (the planted-looking entries are ignored) nor written.
    assert source.requests_made == 8
    warnings = [r.getMessage() for r in caplog.records if "collateral cache" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(cache) in warnings[0] and "\n" not in warnings[0]
    cache.chmod(0o700)
    assert _sim_fetch(_sim_source(sim_pki, sim.url)) is not None
    assert len(sim.requests) == 12


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


def test_a_cached_fallback_root_crl_costs_no_request(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    # Like Intel PCS: no /rootcacrl, the root CRL comes from the fallback URL.
    sim.serve_root_crl = False
    fallback = f"{sim.url}/IntelSGXRootCA.der"
    _sim_fetch(_sim_source(sim_pki, sim.url, root_ca_crl_url=fallback))
    assert "/IntelSGXRootCA.der" in sim.requests
    again = _sim_source(sim_pki, sim.url, root_ca_crl_url=fallback)
    _sim_fetch(again)
    assert again.requests_made == 0


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


# --- transport --------------------------------------------------------------------------------

Reply = Callable[[socket.socket], None]


@pytest.fixture
def raw_server() -> Iterator[Callable[..., str]]:
    """A TCP server answering every connection with ``reply`` (after reading the request).

    With ``tls``, the server handshakes first and the URL is https://.
    """
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> str:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):  # the client gave up
                    sock = self.request
                    if tls is not None:
                        sock = tls.wrap_socket(sock, server_side=True)
                    sock.recv(65536)
                    reply(sock)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _many_headers(sock: socket.socket) -> None:
    headers = "".join(f"X-{i}: a\r\n" for i in range(101))
    sock.sendall(f"HTTP/1.1 200 OK\r\n{headers}Content-Length: 2\r\n\r\n{{}}".encode())


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (lambda s: s.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "BadStatusLine"),
        (_many_headers, "got more than 100 headers"),
        (
            lambda s: s.sendall(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
            "LineTooLong",
        ),
        (
            lambda s: s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{}"),
            "IncompleteRead",
        ),
        (
            lambda s: s.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[::1/x\r\n\r\n"),
            "ValueError",
        ),
    ],
    ids=["bad-status-line", "101-headers", "long-header", "short-body", "bad-redirect-url"],
)
def test_a_malformed_http_answer_is_a_one_line_error(
    raw_server: Callable[[Reply], str], cache: Path, reply: Reply, detail: str
) -> None:
    source = PCCSCollateralSource(raw_server(reply), use_cache=False)
    with pytest.raises(CollateralError, match="invalid HTTP response") as info:
        source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert detail in str(info.value)
    assert "\n" not in str(info.value)


def test_control_characters_of_the_reason_phrase_are_not_shown(
    raw_server: Callable[[Reply], str], cache: Path
) -> None:
    url = raw_server(
        lambda s: s.sendall(
            b"HTTP/1.1 500 Internal \x1b[31mall checks passed\x1b[0m\r\nContent-Length: 0\r\n\r\n"
        )
    )
    with pytest.raises(CollateralError, match="HTTP 500 Internal") as info:
        PCCSCollateralSource(url).collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    message = str(info.value)
    assert "all checks passed" in message
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in message)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_dripping_server_hits_the_overall_deadline(
    raw_server: Callable[..., str],
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls: bool,
) -> None:
    # Over TLS too: https:// must go through the watched handler, not urllib's default one,
    # which only the per-read timeout would bound (10 s here).
    context = None
    if tls:
        context, cert = _tls_context(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    def drip(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # a header byte every 0.1 s: each read is quick, the whole is not
            sock.sendall(b"X")
            time.sleep(0.1)

    url = raw_server(drip, context)
    assert url.startswith("https://" if tls else "http://")
    source = PCCSCollateralSource(url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(CollateralError, match=r"did not answer within 1 s"):
        source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert time.monotonic() - started < 4


def _tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the PEM file a client must trust for it."""
    cert_path, key_path = self_signed_pem(tmp_path, "pccs", common_name="test PCCS", dns=())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_https_to_http_redirect_is_refused(
    sim_pki: SimulationPKI,
    serve: Serve,
    tmp_path: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context, cert = _tls_context(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    def pcs(**kwargs: Any) -> FakePCS:
        pem = _pck_ca_pem(sim_pki.pck_chain_pem)
        return FakePCS(sim_pki.collateral_dir, SIMULATION_FMSPC, pem, **kwargs)

    plain = serve(pcs())
    secure = serve(pcs(), context)
    # https -> https is followed (so the refusal below is about the scheme, not TLS).
    hop = serve(pcs(redirect_to=secure.url), context)
    _sim_fetch(_sim_source(sim_pki, hop.url, use_cache=False))
    assert len(hop.requests) == 4 and len(secure.requests) == 4
    # https -> http is not.
    downgrade = serve(pcs(redirect_to=plain.url), context)
    with pytest.raises(CollateralError, match="refusing to leave https://"):
        _sim_fetch(_sim_source(sim_pki, downgrade.url))
    assert len(downgrade.requests) == 1
    assert plain.requests == []
    # http -> http redirects still work.
    relay = serve(pcs(redirect_to=plain.url))
    _sim_fetch(_sim_source(sim_pki, relay.url, use_cache=False))
    assert len(plain.requests) == 4


def test_plain_http_logs_one_warning(caplog: pytest.LogCaptureFixture, cache: Path) -> None:
    caplog.set_level(logging.WARNING, logger="mse_base._internal.dcap.pccs")
    PCCSCollateralSource("https://pccs.example:8081")
    assert caplog.records == []
    PCCSCollateralSource("http://pccs.example:8081")
    assert len(caplog.records) == 1
    assert "plain http://" in caplog.records[0].getMessage()


# --- bounded answers -------------------------------------------------------------------------


def _endless(head: bytes, framing: Callable[[bytes], bytes] = lambda c: c) -> Reply:
    def reply(sock: socket.socket) -> None:
        sock.sendall(head)
        chunk = framing(bytes(1 << 16))
        while True:  # until the client hangs up (the handler ignores the OSError then)
            sock.sendall(chunk)

    return reply


@pytest.mark.parametrize(
    "reply",
    [
        _endless(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
        _endless(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"),
        _endless(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            lambda c: b"%x\r\n" % len(c) + c + b"\r\n",
        ),
    ],
    ids=["until-close", "huge-content-length", "chunked"],
)
def test_an_endless_body_is_cut_at_the_cap(
    raw_server: Callable[[Reply], str], cache: Path, reply: Reply
) -> None:
    # The client stops reading at the cap; without it, it would read until the deadline (or
    # memory) ran out and then blame the time.
    source = PCCSCollateralSource(raw_server(reply), use_cache=False, timeout=DEADLINE)
    with within(), pytest.raises(CollateralError) as info:
        source.collateral_for(fmspc="00a067110000", pck_ca="processor", at=AT)
    assert "is larger than 4 MiB, more than any collateral document" in str(info.value)


def test_a_cache_entry_that_is_a_fifo_is_a_miss_not_a_hang(
    sim_pki: SimulationPKI, sim: FakePCS, cache: Path
) -> None:
    first = _sim_fetch(_sim_source(sim_pki, sim.url))
    tcb_url = f"{sim.url}/sgx/certification/v4/tcb?fmspc={SIMULATION_FMSPC}"
    path = next(p for p in cache.glob("*.json") if json.loads(p.read_text())["url"] == tcb_url)
    path.unlink()
    os.mkfifo(path, 0o600)
    again = _sim_source(sim_pki, sim.url)
    with within():
        assert _sim_fetch(again) == first
    assert again.requests_made == 1
    # The fetched answer replaced the FIFO (renamed over it, never written through).
    assert path.is_file() and json.loads(path.read_text())["url"] == tcb_url
