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


def listening_addresses(port: int) -> set[str]:
    """The addresses TCP sockets listen on at ``port``, as the kernel lists them."""
    import ipaddress

    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.partition(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: TCP_LISTEN
                continue
            # The kernel prints the address as 32-bit words in host (little-endian) order.
            words = [bytes.fromhex(address[i : i + 8]) for i in range(0, len(address), 8)]
            raw = b"".join(word[::-1] for word in words)
            found.add(str(ipaddress.ip_address(raw)))
    return found
