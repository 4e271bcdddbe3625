"""Local network helpers for the tests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def openssl_served_certificate(port: int, path: Path) -> Path:
    """The certificate served on 127.0.0.1:``port`` for SNI localhost, fetched with
    ``openssl s_client`` as a user would, written to ``path`` as PEM."""
    raw = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    pem = subprocess.run(
        ["openssl", "x509"], input=raw, capture_output=True, text=True, check=True
    ).stdout
    path.write_text(pem)
    return path
