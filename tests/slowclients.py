"""Slow clients for the slot tests: real TLS connections that trickle a request for ever."""

from __future__ import annotations

import socket
import ssl
import threading
import time

ATTACKER = "127.0.0.2"
# The push endpoint's cap (provisioning._MAX_CONNECTIONS) and a few more that wait for a slot.
PUSH_ATTACKERS = 20
# Each attacker's connections are counted, so a test that fails cannot loop for ever.
MAX_CONNECTS = 400


class Tricklers:
    """``count`` threads, each keeping one slow TLS connection open from ``source``."""

    def __init__(self, port: int, source: str, count: int) -> None:
        self.port, self.source = port, source
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.live = 0  # connections past the handshake, trickling now
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for _ in range(MAX_CONNECTS):
            if self.stop.is_set():
                return
            trickling = False
            try:
                with (
                    socket.create_connection(
                        ("127.0.0.1", self.port), timeout=120, source_address=(self.source, 0)
                    ) as raw,
                    context.wrap_socket(raw, server_hostname="localhost") as tls,
                ):
                    with self.lock:
                        self.live += 1
                    trickling = True
                    tls.sendall(b"POST /mse/provision HTTP/1.1\r\nX-Slow: ")
                    while not self.stop.wait(1.0):
                        tls.sendall(b"x")  # a header line that never ends
            except (OSError, ssl.SSLError):
                pass
            finally:
                if trickling:
                    with self.lock:
                        self.live -= 1
            self.stop.wait(0.05)

    def wait_until_live(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.live < count:
            assert time.monotonic() < deadline, f"only {self.live} slow connections got a slot"
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
