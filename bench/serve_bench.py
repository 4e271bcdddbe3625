"""HTTPS serving benchmark: mse-base's serve() against the original MSE path and uvicorn.

Every server runs as ONE process (as in the enclave, where Gramine forbids subprocesses), on
loopback, with the same self-signed certificate, and is loaded with wrk (Debian package ``wrk``):
keep-alive, 32 connections, HTTP/1.1 over TLS, a fixed time per cell. Apps: a Flask hello world
and a plain ASGI hello world. Servers:

* ``mse-base``: ``mse_base._internal.runtime.serve.serve`` (granian's Rust core driven in-process).
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


# --- server side (runs in the child process) ---------------------------------------------------


def child(server: str, app_name: str, app_dir: Path, port: int, cert: Path, key: Path) -> None:
    sys.path.insert(0, str(app_dir))
    if server == "mse-base":
        from mse_base._internal.runtime.application import load_application
        from mse_base._internal.runtime.serve import TLSFiles, serve

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
    protocol: str
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
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if tls.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start serving in time")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def run_wrk(url: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """HTTP/1.1 load: (requests/s, p99 ms, failed requests)."""
    common = ["wrk", f"-t{args.client_threads}", f"-c{args.connections}"]
    subprocess.run([*common, "-d2s", url], check=True, capture_output=True)  # warm-up
    argv = [*common, f"-d{args.duration}s", "--latency", url]
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


def run_h2load(url: str, args: argparse.Namespace, workdir: Path) -> tuple[float, float, int]:
    """HTTP/2 load, one stream per connection at a time: (requests/s, p99 ms, failed requests).

    h2load prints no percentiles; its per-request log (start, status, latency in us) gives p99.
    """
    # h2load writes one line per request: on a disk that write, not the server, sets the pace.
    shm = Path("/dev/shm")
    handle, name = tempfile.mkstemp(prefix="h2load-", dir=shm if shm.is_dir() else workdir)
    os.close(handle)
    log = Path(name)
    argv = [
        "h2load",
        f"-t{args.client_threads}",
        f"-c{args.connections}",
        "-m1",
        "--warm-up-time=2",
        f"-D{args.duration}",
        f"--log-file={log}",
        url,
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    statuses = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    latencies = sorted(
        int(fields[2])
        for fields in (line.split() for line in log.read_text().splitlines())
        if len(fields) == 3
    )
    log.unlink()
    if rps is None or counts is None or statuses is None or not latencies:
        raise SystemExit(f"cannot parse h2load output:\n{out}")
    p99_us = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    errors = sum(int(n) for n in counts.groups()[1:]) + sum(int(n) for n in statuses.groups())
    return float(rps.group(1)), p99_us / 1000, errors


def process_shape(pid: int) -> tuple[int, int]:
    """(child processes, threads) of ``pid``, read from /proc while it serves."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    children = sum(len((task / "children").read_text().split()) for task in tasks)
    return children, len(tasks)


def measure(
    cell: tuple[str, str, str], workdir: Path, cert: Path, key: Path, args: argparse.Namespace
) -> Cell:
    app, server, protocol = cell
    port = free_port()
    argv = [sys.executable, __file__, "--child", server, app, str(workdir), str(port)]
    argv += [str(cert), str(key), str(args.wsgi_threads or 0)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://localhost:{port}/"
    try:
        wait_until_serving(port, proc)
        if protocol == "h2":
            rps, p99, errors = run_h2load(url, args, workdir)
        else:
            rps, p99, errors = run_wrk(url, args)
        children, threads = process_shape(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Cell(app, server, protocol, rps, p99, errors, children, threads)


def ratios_of(cells: list[Cell]) -> dict[str, tuple[float, float | None]]:
    """name -> (ratio, goal); a p99 goal is an upper bound, a req/s goal a lower bound."""
    by = {(c.app, c.server, c.protocol): c for c in cells}
    out: dict[str, tuple[float, float | None]] = {}
    for protocol in ("h1", "h2"):
        ours_asgi = by.get(("asgi", "mse-base", protocol))
        ours_flask = by.get(("flask", "mse-base", protocol))
        original_asgi = by.get(("asgi", "original", protocol))
        original_flask = by.get(("flask", "original", protocol))
        uvicorn_asgi = by.get(("asgi", "uvicorn-asgi", protocol))
        uvicorn_wsgi = by.get(("flask", "uvicorn-wsgi", protocol))
        if ours_asgi and uvicorn_asgi:
            out[f"{protocol} asgi req/s vs uvicorn-asgi"] = (
                ours_asgi.requests_per_s / uvicorn_asgi.requests_per_s,
                1.2,
            )
        if ours_asgi and original_asgi:
            out[f"{protocol} asgi req/s vs original"] = (
                ours_asgi.requests_per_s / original_asgi.requests_per_s,
                None,
            )
            out[f"{protocol} asgi p99 vs original"] = (ours_asgi.p99_ms / original_asgi.p99_ms, 0.1)
        if ours_flask and original_flask:
            out[f"{protocol} flask req/s vs original"] = (
                ours_flask.requests_per_s / original_flask.requests_per_s,
                8.0,
            )
            out[f"{protocol} flask p99 vs original"] = (
                ours_flask.p99_ms / original_flask.p99_ms,
                None,
            )
        if ours_flask and uvicorn_wsgi:
            out[f"{protocol} flask req/s vs uvicorn-wsgi"] = (
                ours_flask.requests_per_s / uvicorn_wsgi.requests_per_s,
                None,
            )
    return out


def met(name: str, value: float, goal: float) -> bool:
    return value <= goal if "p99" in name else value >= goal


def report(cells: list[Cell], as_json: bool) -> int:
    ratios = ratios_of(cells)
    failed = [
        name
        for name, (value, goal) in ratios.items()
        if goal is not None and not met(name, value, goal)
    ]
    failed += [
        f"{c.app}/{c.server}/{c.protocol}: {c.child_processes} child processes"
        for c in cells
        if c.child_processes
    ]
    failed += [f"{c.app}/{c.server}/{c.protocol}: {c.errors} errors" for c in cells if c.errors]

    if as_json:
        document = {
            "cells": [asdict(c) for c in cells],
            "ratios": {name: value for name, (value, _) in ratios.items()},
            "goals": {name: goal for name, (_, goal) in ratios.items() if goal is not None},
            "failed": failed,
        }
        print(json.dumps(document))
        return 1 if failed else 0

    header = ("app", "server", "proto", "req/s", "p99 ms", "errors", "procs", "threads")
    print("{:<6} {:<13} {:<5} {:>9} {:>8} {:>6} {:>5} {:>7}".format(*header))
    for c in cells:
        print(
            f"{c.app:<6} {c.server:<13} {c.protocol:<5} {c.requests_per_s:>9.0f} {c.p99_ms:>8.2f} "
            f"{c.errors:>6} {1 + c.child_processes:>5} {c.threads:>7}"
        )
    print()
    for name, (value, goal) in ratios.items():
        verdict = ""
        if goal is not None:
            bound = "<=" if "p99" in name else ">="
            verdict = f"  goal {bound} {goal:g}: {'met' if met(name, value, goal) else 'MISSED'}"
        print(f"{name:<34} {value:8.2f}x{verdict}")
    for line in failed:
        if line not in ratios:
            print(f"FAILED: {line}")
    return 1 if failed else 0


def median_cell(rounds: list[Cell]) -> Cell:
    """The round with the median req/s (its own p99 with it, so the pair stays one sample)."""
    ordered = sorted(rounds, key=lambda cell: cell.requests_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    return Cell(
        chosen.app,
        chosen.server,
        chosen.protocol,
        chosen.requests_per_s,
        chosen.p99_ms,
        sum(cell.errors for cell in rounds),
        max(cell.child_processes for cell in rounds),
        max(cell.threads for cell in rounds),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per cell and round (default 10)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds, median reported (default 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-threads", type=int, default=2)
    parser.add_argument(
        "--protocol", choices=["h1", "h2", "both"], default="both", help="default both"
    )
    parser.add_argument(
        "--only", action="append", metavar="APP/SERVER", help="run only these cells (repeatable)"
    )
    parser.add_argument(
        "--wsgi-threads", type=int, help="override mse-base's WSGI thread count (tuning)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        server, app, app_dir, port, cert, key, wsgi_threads = args.child
        if int(wsgi_threads):
            import mse_base._internal.runtime.serve

            mse_base._internal.runtime.serve.WSGI_THREADS = int(wsgi_threads)
        child(server, app, Path(app_dir), int(port), Path(cert), Path(key))
        return 0

    protocols = ["h1", "h2"] if args.protocol == "both" else [args.protocol]
    tools = {"h1": "wrk", "h2": "h2load"}
    for protocol in protocols:
        if shutil.which(tools[protocol]) is None:
            print(
                f"serve_bench: {tools[protocol]} not found; install it with: "
                "apt-get install -y wrk nghttp2-client",
                file=sys.stderr,
            )
            return 2
    cells = [
        (app, server, protocol)
        for protocol in protocols
        for app, server in CELLS
        # uvicorn speaks no HTTP/2.
        if not (protocol == "h2" and server.startswith("uvicorn"))
        if not args.only or f"{app}/{server}" in args.only
    ]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        workdir = Path(tmp)
        for name, source in APPS.items():
            (workdir / f"{name}_hello.py").write_text(textwrap.dedent(source))
        cert, key = make_cert(workdir)
        rounds: dict[tuple[str, str, str], list[Cell]] = {cell: [] for cell in cells}
        # Rounds interleave the cells so that a burst of other load on the machine hits every
        # server alike instead of one; each cell reports its median round.
        for number in range(1, args.rounds + 1):
            for cell in cells:
                if not args.json:
                    print(
                        f"  round {number}/{args.rounds}: {'/'.join(cell)} for {args.duration}s",
                        file=sys.stderr,
                    )
                rounds[cell].append(measure(cell, workdir, cert, key, args))
        results = [median_cell(rounds[cell]) for cell in cells]
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
