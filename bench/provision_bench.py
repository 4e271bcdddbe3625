"""Verified pull requests per second that one ``mse-secrets serve`` process answers.

    .venv/bin/python bench/provision_bench.py [--enclaves 300] [--requests 1200] [--clients 8]

The fleet-restart case: many replicas of one enclave (one MRENCLAVE, one collateral set), each
with its own RA-TLS key and quote, fetch their secrets at once. The benchmark makes
``--enclaves`` distinct RA-TLS client certificates from the simulation PKI (a new key and a new
quote each), starts ``mse-secrets serve`` as a subprocess with a policy pinning that MRENCLAVE,
and has ``--clients`` client processes send ``--requests`` pulls in all, cycling through the
certificates. Every pull is a new TLS connection with a client certificate, as an enclave makes
it; every answer must be 200 with the secrets. The server verifies each certificate in full
(quote signature, QE report, key binding, validity, revocation, TCB, policy); what is memoised
per process is described in ``verify_bench.py``.

Goal (printed, not asserted): at least 300 verified provisioning requests/s on a 2-core machine.
The clients run on the same machine and take their share of the CPU, so the figure is a floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mse_base._internal.dcap import ratls
from mse_base._internal.files import private_key_pem, write_private
from mse_base._internal.simulation.pki import SimulationQuoteProvider

MRENCLAVE = bytes.fromhex("5a" * 32)
GOAL = 300.0


def _server_pair(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_path, private_key_pem(key))
    return cert_path, key_path


def _enclave_certificates(directory: Path, pki: Path, count: int) -> list[tuple[str, str]]:
    provider = SimulationQuoteProvider(mrenclave=MRENCLAVE, mrsigner=b"\x01" * 32, directory=pki)
    pairs = []
    for index in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ratls.build_certificate(
            key=key,
            host="localhost",
            deployment_id=uuid.uuid4(),
            not_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
            quote=provider.quote(ratls.report_data_for_key(key.public_key())),
        )
        cert_path, key_path = directory / f"enclave-{index}.pem", directory / f"enclave-{index}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(key_path, private_key_pem(key))
        pairs.append((str(cert_path), str(key_path)))
    return pairs


def _contexts(ca: str, pairs: list[tuple[str, str]]) -> list[ssl.SSLContext]:
    contexts = []
    for cert, key in pairs:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        contexts.append(context)
    return contexts


def _pull(port: int, context: ssl.SSLContext) -> bool:
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
    try:
        connection.request("GET", "/mse/secrets")
        response = connection.getresponse()
        body = response.read()
        return response.status == 200 and json.loads(body)["secrets"]["KEY"] == "value"
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return False
    finally:
        connection.close()


def _client(
    port: int,
    ca: str,
    pairs: list[tuple[str, str]],
    start: Any,
    results: Any,
) -> None:
    """Pull once with each certificate in ``pairs``, after every client is ready."""
    contexts = _contexts(ca, pairs)  # not timed: an enclave has its key before it pulls
    start.wait()
    outcomes = [_pull(port, context) for context in contexts]
    results.put((outcomes.count(True), outcomes.count(False)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enclaves", type=int, default=300, help="distinct client certificates")
    parser.add_argument("--requests", type=int, default=1200, help="pulls in all")
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mse-provision-bench-") as name:
        root = Path(name)
        pki = root / "simulation"
        print(f"making {args.enclaves} enclave certificates ...", file=sys.stderr)
        pairs = _enclave_certificates(root, pki, args.enclaves)
        server_cert, server_key = _server_pair(root)
        (root / "policy.toml").write_text(f'mrenclave = ["{MRENCLAVE.hex()}"]\n')
        (root / "secrets.json").write_text('{"KEY": "value"}')
        port = _free_port()
        bin_dir = Path(sys.executable).parent
        err = (root / "serve.err").open("w")
        server = subprocess.Popen(
            [str(bin_dir / "mse-secrets"), "serve", "--policy", str(root / "policy.toml"),
             "--secrets", str(root / "secrets.json"), "--cert", str(server_cert), "--key",
             str(server_key), "--bind", "127.0.0.1", "--port", str(port), "--simulation-ca",
             str(pki / "ca.pem")],
            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "serving" not in (root / "serve.err").read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    print((root / "serve.err").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
            # One pull first: the server's first verification loads the collateral.
            if not _pull(port, _contexts(str(server_cert), pairs[:1])[0]):
                print("the warm-up pull failed:", (root / "serve.err").read_text(), file=sys.stderr)
                return 1
            # Each request its own certificate, cycling through the enclaves.
            work = [pairs[i % len(pairs)] for i in range(args.requests)]
            start = multiprocessing.Barrier(args.clients + 1)
            queue: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
            clients = [
                multiprocessing.Process(
                    target=_client,
                    args=(port, str(server_cert), work[index :: args.clients], start, queue),
                )
                for index in range(args.clients)
            ]
            for client in clients:
                client.start()
            start.wait()
            started = time.perf_counter()
            results = [queue.get() for _ in clients]
            elapsed = time.perf_counter() - started
            for client in clients:
                client.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
            err.close()
    good = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    rate = good / elapsed
    print(f"cpus: {os.cpu_count()}, enclaves: {args.enclaves}, clients: {args.clients}")
    print(f"verified pulls: {good} in {elapsed:.2f} s, failed: {bad}")
    print(
        f"rate: {rate:.0f} requests/s (goal >= {GOAL:.0f}: {'met' if rate >= GOAL else 'MISSED'})"
    )
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
