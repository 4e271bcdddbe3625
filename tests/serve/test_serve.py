"""serve(): real server processes reached with curl, httpx and openssl over real TLS sockets."""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import platform
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import Server, ServerExited, TLSPair, start_server

Start = Callable[..., Server]


def curl(server: Server, cacert: Path | None, *options: str) -> tuple[str, str]:
    """GET the server's root with curl; return (body, HTTP version curl used)."""
    argv = ["curl", "--silent", "--show-error", "--fail", "--max-time", "20"]
    if cacert is not None:
        argv += ["--cacert", str(cacert)]
    argv += [*options, "--write-out", "\n%{http_version}", server.url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    body, _, version = out.rpartition("\n")
    return body, version


def children_of(pid: int) -> list[str]:
    """Child processes of every thread of ``pid`` (Linux /proc)."""
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += (task / "children").read_text().split()
    return children


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


APPS = [
    ("flask_app:app", "wsgi", "Hello from Flask"),
    ("asgi_app:app", "asgi", "Hello from ASGI over "),
    ("fastapi_app:app", "asgi", '{"hello":"FastAPI"}'),
]


@pytest.fixture(params=APPS, ids=[spec.split(":")[0] for spec, _, _ in APPS])
def app_case(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    spec, interface, body = request.param
    return spec, interface, body


def test_https_http1_and_http2_with_curl(
    serve_app: Start, tls_pair: TLSPair, app_case: tuple[str, str, str]
) -> None:
    spec, interface, expected = app_case
    server = serve_app(spec)
    assert server.interface == interface

    body, version = curl(server, tls_pair.cert, "--http1.1")
    assert version == "1.1"
    assert body.startswith(expected)

    body, version = curl(server, tls_pair.cert, "--http2")
    assert version == "2"
    assert body.startswith(expected)

    returncode, _, err = server.stop()
    assert returncode == 0, err


def test_asgi_scope_reports_the_negotiated_http_version(
    serve_app: Start, tls_pair: TLSPair
) -> None:
    server = serve_app("asgi_app:app")
    assert curl(server, tls_pair.cert, "--http1.1")[0] == "Hello from ASGI over 1.1"
    assert curl(server, tls_pair.cert, "--http2")[0] == "Hello from ASGI over 2"


def test_httpx_http2_and_post_body(serve_app: Start, tls_pair: TLSPair) -> None:
    server = serve_app("flask_app:app")
    payload = bytes(range(256)) * 1000
    with httpx.Client(
        http2=True, verify=ssl.create_default_context(cafile=tls_pair.cert), timeout=20
    ) as client:
        response = client.get(server.url)
        assert response.http_version == "HTTP/2"
        assert response.text == "Hello from Flask"
        echoed = client.post(server.url + "echo", content=payload)
        assert echoed.status_code == 200
        assert echoed.content == payload


def test_certificate_is_rejected_by_a_client_without_it(serve_app: Start) -> None:
    server = serve_app("flask_app:app")
    with httpx.Client(timeout=20) as client, pytest.raises(httpx.ConnectError):
        client.get(server.url)


@pytest.mark.parametrize(("offered", "selected"), [("h2", "h2"), ("http/1.1", "http/1.1")])
def test_openssl_alpn(serve_app: Start, tls_pair: TLSPair, offered: str, selected: str) -> None:
    server = serve_app("asgi_app:app")
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{server.port}",
            "-servername",
            "localhost",
            "-alpn",
            offered,
            "-CAfile",
            str(tls_pair.cert),
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"ALPN protocol: {selected}" in result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout


def test_plain_http_without_tls(serve_app: Start) -> None:
    server = serve_app("flask_app:app", tls=False)
    assert curl(server, None)[0] == "Hello from Flask"
    # HTTP/2 without TLS only by prior knowledge, as with any h2c server.
    assert curl(server, None, "--http2-prior-knowledge") == ("Hello from Flask", "2")


@pytest.mark.parametrize("spec", ["flask_app:app", "asgi_app:app"])
def test_serves_from_one_process(serve_app: Start, tls_pair: TLSPair, spec: str) -> None:
    server = serve_app(spec)
    with httpx.Client(
        http2=True, verify=ssl.create_default_context(cafile=tls_pair.cert), timeout=20
    ) as client:
        for _ in range(50):
            assert client.get(server.url).status_code == 200
    assert children_of(server.proc.pid) == []
    # Threads are how it scales instead; this also shows /proc was read for the right process.
    assert thread_count(server.proc.pid) > 1


@pytest.mark.parametrize("spec", ["flask_app:app", "asgi_app:app"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(serve_app: Start, tls_pair: TLSPair, spec: str, sig: int) -> None:
    server = serve_app(spec)
    # An idle keep-alive connection must not hold the shutdown up.
    with httpx.Client(
        verify=ssl.create_default_context(cafile=tls_pair.cert), timeout=20
    ) as client:
        assert client.get(server.url).status_code == 200
        returncode, out, err = server.stop(sig)
    assert returncode == 0, err
    assert out.splitlines()[-1] == "STOPPED"


def test_asgi_lifespan_startup_and_shutdown_run(serve_app: Start, tls_pair: TLSPair) -> None:
    server = serve_app("lifespan_app:app")
    assert curl(server, tls_pair.cert)[0] == "started=1"
    returncode, out, err = server.stop()
    assert returncode == 0, err
    assert "LIFESPAN SHUTDOWN" in out.splitlines()


def test_asgi_lifespan_startup_failure_stops_the_run(
    tls_pair: TLSPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFESPAN_FAIL", "1")
    with pytest.raises(ServerExited) as excinfo:
        start_server("lifespan_app:app", tls_pair)
    assert excinfo.value.returncode == 1
    assert "lifespan startup failed" in excinfo.value.stderr
    assert "no database" in excinfo.value.stderr


def test_import_error_exits_nonzero_with_the_message(tls_pair: TLSPair) -> None:
    with pytest.raises(ServerExited) as excinfo:
        start_server("broken_app:app", tls_pair)
    assert excinfo.value.returncode == 1
    assert "broken_app" in excinfo.value.stderr
    assert "module_that_does_not_exist" in excinfo.value.stderr
    assert "Traceback" not in excinfo.value.stderr


def test_port_in_use_is_a_clear_error(tls_pair: TLSPair) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerExited) as excinfo:
            start_server("flask_app:app", tls_pair, port=port)
    assert excinfo.value.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in excinfo.value.stderr


def test_second_server_on_the_same_port_is_refused(serve_app: Start, tls_pair: TLSPair) -> None:
    # granian's own listener sets SO_REUSEPORT, which would let this start and split traffic.
    first = serve_app("flask_app:app")
    with pytest.raises(ServerExited) as excinfo:
        start_server("asgi_app:app", tls_pair, port=first.port)
    assert "already in use" in excinfo.value.stderr


def test_unreadable_key_is_a_clear_error(tls_pair: TLSPair, tmp_path: Path) -> None:
    wrong_key = tmp_path / "key.pem"
    wrong_key.write_text("not a key\n")
    with pytest.raises(ServerExited) as excinfo:
        start_server("flask_app:app", TLSPair(tls_pair.cert, wrong_key))
    assert excinfo.value.returncode == 1
    assert "cannot load TLS certificate" in excinfo.value.stderr
    assert str(wrong_key) in excinfo.value.stderr


def test_access_log_lines(serve_app: Start, tls_pair: TLSPair) -> None:
    server = serve_app("flask_app:app")
    curl(server, tls_pair.cert, "--http1.1")
    returncode, _, err = server.stop()
    assert returncode == 0
    assert '"GET / HTTP/1.1" 200' in err, err


def test_fastapi_json(serve_app: Start, tls_pair: TLSPair) -> None:
    server = serve_app("fastapi_app:app")
    body, _ = curl(server, tls_pair.cert, "--http2")
    assert json.loads(body) == {"hello": "FastAPI"}


@pytest.mark.parametrize("spec", ["failing_app:wsgi", "failing_app:asgi"])
def test_handler_exception_is_a_500_and_serving_goes_on(serve_app: Start, spec: str) -> None:
    server = serve_app(spec, tls=False)
    with httpx.Client(timeout=20) as client:
        assert client.get(server.url).status_code == 500
        assert client.get(server.url).status_code == 500
    returncode, _, err = server.stop()
    assert returncode == 0, err
    assert "RuntimeError: handler bug" in err


def test_wsgi_requests_run_concurrently(serve_app: Start) -> None:
    server = serve_app("barrier_app:app", tls=False)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: httpx.get(server.url, timeout=60), range(2)))
    assert [r.text for r in responses] == ["together", "together"]


_TGKILL = {"x86_64": 234, "aarch64": 131}


def _tgkill(pid: int, tid: int, sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_TGKILL[platform.machine()], pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


@pytest.mark.skipif(platform.machine() not in _TGKILL, reason="tgkill number unknown here")
@pytest.mark.parametrize("spec", ["flask_app:app", "asgi_app:app"])
def test_sigterm_taken_by_a_rust_thread_still_stops(
    serve_app: Start, tls_pair: TLSPair, spec: str
) -> None:
    # The kernel may deliver a process's SIGTERM to any of its threads; aim it at one of
    # granian's, where Python's own handler cannot run.
    server = serve_app(spec)
    assert curl(server, tls_pair.cert, "--http2")[0].startswith("Hello")
    tasks = Path(f"/proc/{server.proc.pid}/task")
    rust = [
        t.name for t in tasks.iterdir() if (t / "comm").read_text().strip() == "tokio-rt-worker"
    ]
    assert rust, "no granian runtime thread found"
    _tgkill(server.proc.pid, int(rust[0]), signal.SIGTERM)
    out, err = server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0, err
    assert out.splitlines()[-1] == "STOPPED"
