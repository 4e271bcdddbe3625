"""The connection slots both provisioning servers use, on real loopback sockets.

A line server built on :class:`SlotServer` with small limits (the push endpoint and the pull
server set their own, tested end to end in test_slow_clients.py and test_pull.py): each
connection sends one line, the server answers it. Clients come from 127.0.0.1 and 127.0.0.2,
two addresses of the loopback interface.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from mse_base._internal.provision.connections import SlotServer, address_group

OTHER = "127.0.0.2"


class _LineServer(SlotServer):
    capacity = 4
    queue = 32
    deadline = 1.5
    grace = 1.0
    name = "test line server"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0  # connections being served right now
        self.peak = 0
        super().__init__(("127.0.0.1", 0), _Line)


class _Line(socketserver.StreamRequestHandler):
    server: _LineServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.now += 1
            self.server.peak = max(self.server.peak, self.server.now)

    def handle(self) -> None:
        line = self.rfile.readline()
        if line.endswith(b"\n") and self.server.received(self.request):
            self.wfile.write(b"ok " + line)

    def finish(self) -> None:
        with self.server.lock:
            self.server.now -= 1
        super().finish()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_LineServer]:
    limits = getattr(request, "param", {})
    running = _LineServer()
    for name, value in limits.items():
        setattr(running, name, value)
    thread = threading.Thread(target=running.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=10)


def _connect(server: _LineServer, source: str = "127.0.0.1") -> socket.socket:
    port = server.server_address[1]
    return socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))


def _ask(sock: socket.socket, line: bytes = b"hello\n") -> bytes:
    sock.sendall(line)
    answer = b""
    while chunk := sock.recv(100):
        answer += chunk
    return answer


def test_a_trickling_client_is_cut_at_its_deadline_however_often_it_sends(
    server: _LineServer,
) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.settimeout(0.2)
        cut = None
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b"x")  # never a whole line, never 0.2 s of silence
                if sock.recv(100) == b"":
                    cut = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                cut = time.monotonic() - started
                break
    assert cut is not None, "the trickling client was never cut"
    assert server.deadline - 0.2 <= cut < server.deadline + 3, cut


def test_idle_clients_beyond_the_cap_wait_without_a_thread_then_are_served(
    server: _LineServer,
) -> None:
    idle = [_connect(server, OTHER) for _ in range(3 * server.capacity)]
    try:
        time.sleep(0.5)
        assert server.peak <= server.capacity
        # From another address: it takes the slot of one of the idle clients at once.
        with _connect(server) as sock:
            assert _ask(sock) == b"ok hello\n"
        assert server.peak <= server.capacity
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("server", [{"deadline": 30.0, "grace": 0.5}], indirect=True)
def test_a_client_alone_at_its_address_keeps_its_slot_against_a_refilling_attacker(
    server: _LineServer,
) -> None:
    attack = [_connect(server, OTHER) for _ in range(server.capacity)]
    try:
        time.sleep(0.3)
        owner = _connect(server)
        # Many more from the attacker's address, well past the grace: none takes the
        # owner's slot (its address holds more), they only replace each other.
        for _ in range(5):
            time.sleep(0.6)
            attack += [_connect(server, OTHER) for _ in range(server.capacity)]
        with owner:
            assert _ask(owner) == b"ok hello\n"
        assert server.peak <= server.capacity
    finally:
        for sock in attack:
            sock.close()


@pytest.mark.parametrize("server", [{"deadline": 30.0, "grace": 1.0}], indirect=True)
def test_clients_of_one_address_keep_their_slot_for_the_grace_then_make_room(
    server: _LineServer,
) -> None:
    idle = [_connect(server) for _ in range(server.capacity)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        with _connect(server) as sock:
            assert _ask(sock) == b"ok hello\n"
        waited = time.monotonic() - started
        # It waited for the oldest to have had its grace, not for its deadline.
        assert server.grace - 0.5 <= waited < server.deadline / 2, waited
        assert server.peak <= server.capacity
    finally:
        for sock in idle:
            sock.close()


def test_addresses_are_counted_per_ipv4_address_or_ipv6_64() -> None:
    assert address_group(("127.0.0.2", 1)) == "127.0.0.2"
    assert address_group(("2001:db8::1", 1, 0, 0)) == address_group(("2001:db8::ffff", 2, 0, 0))
    assert address_group(("2001:db8::1", 1, 0, 0)) != address_group(("2001:db8:0:1::1", 1, 0, 0))
    assert address_group(("::ffff:10.0.0.1", 1, 0, 0)) == "10.0.0.1"
