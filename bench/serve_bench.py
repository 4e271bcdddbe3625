"""HTTPS serving benchmark: mse-base's serve() against the original MSE path and uvicorn.

Every server runs as ONE process (as in the enclave, where Gramine forbids subprocesses), on
loopback, with the same self-signed certificate, and is loaded with wrk (Debian package ``wrk``):
keep-alive, 32 connections, HTTP/1.1 over TLS, a fixed time per cell. Apps: a Flask hello world
and a plain ASGI hello world. Servers:

* ``mse-base``: ``mse_base._internal.serve.serve`` (granian's Rust core driven in-process).
* ``original``: the original MSE bootstrap's serving path exactly as it runs: ``hypercorn.asyncio
  .serve`` awaited under a plain ``asyncio.run``, with its config mapping (one worker, ALPN h2,
  access and error log to stdout, ...) as in Cosmian/mse-lib-sgx ``src/mse_lib_sgx/cli.py``.
  Its ``worker_class = "uvloop"`` has no effect there: ``asyncio.run`` picks the loop.
* ``uvicorn-asgi`` / ``uvicorn-wsgi``: uvicorn with uvloop and httptools, ASGI mode (the Flask app
  behind a2wsgi's bridge, as a user would write it) and WSGI mode (uvicorn's own WSGI adapter).

Usage: ``python bench/serve_bench.py [--duration 10] [--json]`` (needs ``pip install -e .[bench]``
and ``apt-get install wrk``). Prints a table and the ratios against the goals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FLASK_APP = """
from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, world!"
"""

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""

# Written as <name>_hello.py into a temporary directory (never "flask.py": it would shadow Flask).
APPS = {"flask": FLASK_APP, "asgi": ASGI_APP}
# (app, server) cells, in the order they run and print.
CELLS = [
    ("flask", "mse-base"),
    ("flask", "original"),
    ("flask", "uvicorn-wsgi"),
    ("flask", "uvicorn-asgi"),
    ("asgi", "mse-base"),
    ("asgi", "original"),
    ("asgi", "uvicorn-asgi"),
]
GOALS = {
    "asgi req/s vs uvicorn-asgi": 1.2,  # at least
    "asgi p99 vs original": 0.1,  # at most
    "flask req/s vs original": 8.0,  # at least
}


# --- server side (runs in the child process) ---------------------------------------------------


def child(server: str, app_name: str, app_dir: Path, port: int, cert: Path, key: Path) -> None:
    sys.path.insert(0, str(app_dir))
    if server == "mse-base":
        from mse_base._internal.application import load_application
        from mse_base._internal.serve import TLSFiles, serve

        serve(
            load_application(f"{app_name}_hello:app", app_dir),
            bind="127.0.0.1",
            port=port,
            tls=TLSFiles(cert, key),
        )
    elif server == "original":
        import asyncio
        import importlib
        import logging

        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        # The original bootstrap's logging and config, minus what only applies to its
        # configuration server; bind is loopback here instead of 0.0.0.0.
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(message)s")
        config = Config.from_mapping(
            {
                "bind": f"127.0.0.1:{port}",
                "alpn_protocols": ["h2"],
                "workers": 1,
                "accesslog": "-",
                "errorlog": "-",
                "worker_class": "uvloop",
                "wsgi_max_body_size": 2 * 1024 * 1024 * 1024,
                "certfile": str(cert),
                "keyfile": str(key),
            }
        )
        application = importlib.import_module(f"{app_name}_hello").app
        asyncio.run(hypercorn_serve(application, config))
    elif server.startswith("uvicorn-"):
        import importlib

        import uvicorn

        application = importlib.import_module(f"{app_name}_hello").app
        interface = "wsgi" if server == "uvicorn-wsgi" else "asgi3"
        if app_name == "flask" and interface == "asgi3":
            from a2wsgi import WSGIMiddleware

            application = WSGIMiddleware(application)
        uvicorn.run(
            application,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            interface=interface,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            access_log=False,
            log_level="warning",
            lifespan="off",
        )
    else:
        raise SystemExit(f"unknown server {server}")


# --- load side ----------------------------------------------------------------------------------


@dataclass
class Cell:
    app: str
    server: str
    requests_per_s: float
    p99_ms: float
    errors: int
    child_processes: int
    threads: int


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    if tls.recv(64).startswith(b"HTTP/1.1 200"):
                        return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start serving in time")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def run_wrk(port: int, duration: int, connections: int, threads: int) -> tuple[float, float, int]:
    url = f"https://localhost:{port}/"
    warmup = ["wrk", f"-t{threads}", f"-c{connections}", "-d2s", url]
    subprocess.run(warmup, check=True, capture_output=True)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return float(rps.group(1)), float(p99.group(1)) * _UNITS_MS[p99.group(2)], errors


def process_shape(pid: int) -> tuple[int, int]:
    """(child processes, threads) of ``pid``, read from /proc while it serves."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    children = sum(len((task / "children").read_text().split()) for task in tasks)
    return children, len(tasks)


def measure(
    app: str, server: str, workdir: Path, cert: Path, key: Path, args: argparse.Namespace
) -> Cell:
    port = free_port()
    argv = [sys.executable, __file__, "--child", server, app, str(workdir), str(port)]
    argv += [str(cert), str(key)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(port, proc)
        rps, p99, errors = run_wrk(port, args.duration, args.connections, args.wrk_threads)
        children, threads = process_shape(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Cell(app, server, rps, p99, errors, children, threads)


def report(cells: list[Cell], as_json: bool) -> int:
    by = {(c.app, c.server): c for c in cells}
    ratios: dict[str, float] = {}
    if ("asgi", "mse-base") in by and ("asgi", "uvicorn-asgi") in by:
        ours, uvicorn = by["asgi", "mse-base"], by["asgi", "uvicorn-asgi"]
        ratios["asgi req/s vs uvicorn-asgi"] = ours.requests_per_s / uvicorn.requests_per_s
    if ("asgi", "mse-base") in by and ("asgi", "original") in by:
        ours, original = by["asgi", "mse-base"], by["asgi", "original"]
        ratios["asgi req/s vs original"] = ours.requests_per_s / original.requests_per_s
        ratios["asgi p99 vs original"] = ours.p99_ms / original.p99_ms
    if ("flask", "mse-base") in by and ("flask", "original") in by:
        ours, original = by["flask", "mse-base"], by["flask", "original"]
        ratios["flask req/s vs original"] = ours.requests_per_s / original.requests_per_s
        ratios["flask p99 vs original"] = ours.p99_ms / original.p99_ms
    if ("flask", "mse-base") in by and ("flask", "uvicorn-wsgi") in by:
        ours, uvicorn = by["flask", "mse-base"], by["flask", "uvicorn-wsgi"]
        ratios["flask req/s vs uvicorn-wsgi"] = ours.requests_per_s / uvicorn.requests_per_s

    failed = [
        name
        for name, bound in GOALS.items()
        if name in ratios and (ratios[name] > bound if "p99" in name else ratios[name] < bound)
    ]
    failed += [
        f"{c.app}/{c.server}: {c.child_processes} child processes"
        for c in cells
        if c.child_processes
    ]
    failed += [f"{c.app}/{c.server}: {c.errors} errors" for c in cells if c.errors]

    if as_json:
        print(json.dumps({"cells": [asdict(c) for c in cells], "ratios": ratios, "failed": failed}))
        return 1 if failed else 0

    print(
        f"{'app':<6} {'server':<13} {'req/s':>10} {'p99 ms':>8} {'errors':>6} {'procs':>5} {'threads':>7}"
    )
    for c in cells:
        print(
            f"{c.app:<6} {c.server:<13} {c.requests_per_s:>10.0f} {c.p99_ms:>8.2f} "
            f"{c.errors:>6} {1 + c.child_processes:>5} {c.threads:>7}"
        )
    print()
    for name, value in ratios.items():
        goal = GOALS.get(name)
        verdict = ""
        if goal is not None:
            met = value <= goal if "p99" in name else value >= goal
            verdict = (
                f"  goal {'<=' if 'p99' in name else '>='} {goal:g}: {'met' if met else 'MISSED'}"
            )
        print(f"{name:<30} {value:8.2f}x{verdict}")
    for line in failed:
        if line not in GOALS:
            print(f"FAILED: {line}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--only", action="append", metavar="APP/SERVER", help="run only these cells"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        server, app, app_dir, port, cert, key = args.child
        child(server, app, Path(app_dir), int(port), Path(cert), Path(key))
        return 0

    if shutil.which("wrk") is None:
        print(
            "serve_bench: wrk not found; install it with: apt-get install -y wrk", file=sys.stderr
        )
        return 2
    cells = [c for c in CELLS if not args.only or f"{c[0]}/{c[1]}" in args.only]
    results: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        workdir = Path(tmp)
        for name, source in APPS.items():
            (workdir / f"{name}_hello.py").write_text(textwrap.dedent(source))
        cert, key = make_cert(workdir)
        for app, server in cells:
            if not args.json:
                print(f"  running {app}/{server} for {args.duration}s ...", file=sys.stderr)
            results.append(measure(app, server, workdir, cert, key, args))
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
