"""Connection slots for the provisioning servers: a total deadline, a cap, fair replacement.

Both servers of provisioning, the enclave's push endpoint and ``mse-secrets serve``, give each
connection a thread. Clients that connect and then send a byte now and then ("slowloris") used
to keep those threads for ever, or, behind a plain cap, every slot, so the owner was turned
away. :class:`SlotServer` bounds both:

* **Deadline.** From the moment it is served (given a slot and a thread), a connection has
  ``deadline`` seconds in all for its TLS handshake and its whole request (request line,
  headers, body); then its socket is shut down, however it trickled. Once its request is read
  (:meth:`SlotServer.received`), what the server does with it is no longer the client's time:
  the connection is neither cut nor replaced.
* **Cap.** At most ``capacity`` connections are served at once, so at most that many threads.
  Others are accepted and wait, unread and without a thread, in a queue of at most ``queue``;
  one that waits ``deadline`` seconds is closed.
* **Replacement.** When every slot is taken, a waiting connection may take the slot of a served
  one that is still sending its request. Connections are compared by the slots their address
  holds (an IPv4 address, or an IPv6 /64: what one client usually has). A served connection
  whose address holds ``k`` slots gives its slot up to a waiting connection whose address holds
  ``j``, only when ``j <= k - 2`` (at once), or when ``j == k - 1`` or both are of one address,
  once it has been served ``grace`` seconds. The waiting connection first in line is the one
  whose address holds the fewest slots, then the oldest; the slot taken is the oldest of the
  address holding the most. A full queue drops the newest waiting connection of the address
  that holds the most connections, served and waiting.

What that guarantees a client, say the owner pushing, from an address with no other connection:

* it is first in line but for connections from other addresses that hold no slot either, and
  is served at once unless every slot is held from a different address (with fewer addresses
  than slots, one holds two); it is dropped from a full queue only when that queue holds one
  connection from each of as many different addresses;
* once served, its slot can be taken only by a connection from its own address or one holding
  no slot, after ``grace``, and only when no address holds two slots still sending: attackers
  with fewer addresses than there are slots never take it before its deadline, and any number
  of them leave it ``grace`` seconds;
* clients sharing one address (behind one NAT) cannot be told apart before their request: each
  keeps its slot ``grace`` seconds, and a newcomer waits for the oldest to reach it.

Nothing here tells a client from an attacker before the request; the host (which carries every
packet) can always refuse service, which attestation does not claim to prevent.

May import ``mse_base.errors`` only: the enclave's runtime uses this module.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# At most one line a minute says the slots are full, so an attack cannot flood the log.
_FULL_NOTICE = 60.0


@dataclass(eq=False)
class _Connection:
    request: Any
    client_address: Any
    group: str
    accepted: float
    served: float = 0.0
    received: bool = False
    # Shut down (deadline passed, or its slot given to another): its thread is ending.
    cut: bool = False


def address_group(client_address: Any) -> str:
    """The address a client is counted by: an IPv4 address, or the /64 of an IPv6 one."""
    host = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SlotServer(socketserver.TCPServer):
    """A TCP server that serves each connection on its own thread within bounded slots.

    Put it before the server class (``class S(SlotServer, http.server.HTTPServer)``) and set
    the four limits; the handler calls :meth:`received` once it has read its whole request.
    """

    capacity: int
    queue: int
    deadline: float
    grace: float
    name = "server"
    # Accepting is quick (connections queue in the server, not in the kernel): this only
    # absorbs bursts between two accepts.
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self._served: list[_Connection] = []
        self._waiting: list[_Connection] = []
        self._noticed = -_FULL_NOTICE
        super().__init__(*args, **kwargs)

    # --- the socketserver hooks ----------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        connection = _Connection(request, client_address, address_group(client_address), 0.0)
        with self._lock:
            connection.accepted = time.monotonic()
            self._waiting.append(connection)
            if len(self._waiting) > self.queue:
                self._drop_one()
            self._schedule()

    def service_actions(self) -> None:
        # serve_forever calls this at least every poll interval: deadlines are kept to it.
        with self._lock:
            self._schedule()

    def server_close(self) -> None:
        with self._lock:
            for connection in self._waiting:
                self.shutdown_request(connection.request)
            self._waiting.clear()
            for connection in self._served:
                if not connection.received:
                    self._cut(connection, "the server stopped")
        super().server_close()

    def received(self, request: Any) -> bool:
        """Mark ``request``'s connection as having sent its whole request: from now on it is
        neither cut nor replaced. False if it was cut first (then it must not be acted on)."""
        with self._lock:
            for connection in self._served:
                if connection.request is request:
                    if connection.cut:
                        return False
                    connection.received = True
                    return True
        return False

    def cut_socket(self, request: Any) -> None:
        """Make the connection's thread see the end of its stream, from another thread."""
        # The plain socket's shutdown, also for an ssl.SSLSocket: its own would drop the TLS
        # object under the thread that is reading it. The thread then closes the socket.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(request, socket.SHUT_RDWR)

    # --- the policy (with the lock held) -------------------------------------------------

    def _schedule(self) -> None:
        now = time.monotonic()
        for connection in self._served:
            late = now - connection.served >= self.deadline
            if late and not connection.received and not connection.cut:
                self._cut(connection, f"no whole request within {self.deadline:g} s")
        for connection in [c for c in self._waiting if now - c.accepted >= self.deadline]:
            log.debug("%s: closing %s: waited %g s", self.name, connection.client_address,
                      self.deadline)  # fmt: skip
            self._waiting.remove(connection)
            self.shutdown_request(connection.request)
        held = Counter(c.group for c in self._served if not c.cut)
        while self._waiting:
            line = sorted(self._waiting, key=lambda c: (held[c.group], c.accepted))
            if len(self._served) < self.capacity:
                self._serve(line[0], now)
                held[line[0].group] += 1
                continue
            self._notice_full(now)
            # A slot cut free goes to the first in line when its thread ends: it is counted as
            # that address's already, so an address replacing its own connections keeps its
            # count and cannot pass for one that holds nothing.
            leaving = sum(1 for c in self._served if c.cut)
            for waiting in line[:leaving]:
                held[waiting.group] += 1
            for waiting in line[leaving:]:
                victim = self._victim(waiting, held, now)
                if victim is None:
                    break
                self._cut(victim, f"its slot given to {waiting.client_address[0]}")
                held[victim.group] -= 1
                held[waiting.group] += 1
            return

    def _victim(self, waiting: _Connection, held: Counter[str], now: float) -> _Connection | None:
        claim = held[waiting.group]
        best: _Connection | None = None
        for connection in self._served:
            if connection.received or connection.cut:
                continue
            count = held[connection.group]
            same = connection.group == waiting.group
            old = now - connection.served >= self.grace
            if (not same and count >= claim + 2) or (old and (same or count == claim + 1)):
                key = (count, now - connection.served)
                if best is None or key > (held[best.group], now - best.served):
                    best = connection
        return best

    def _drop_one(self) -> None:
        total = Counter(c.group for c in (*self._served, *self._waiting))
        # The busiest address's newest; among addresses equally busy, the newest of all.
        newest = max(self._waiting, key=lambda c: (total[c.group], c.accepted))
        log.debug("%s: queue full, closing %s", self.name, newest.client_address)
        self._waiting.remove(newest)
        self.shutdown_request(newest.request)

    def _serve(self, connection: _Connection, now: float) -> None:
        self._waiting.remove(connection)
        connection.served = now
        self._served.append(connection)
        thread = threading.Thread(
            target=self._run, args=(connection,), name=f"{self.name}-connection", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this one is closed, the others go on
            self._served.remove(connection)
            self.shutdown_request(connection.request)

    def _cut(self, connection: _Connection, why: str) -> None:
        log.debug("%s: cutting %s: %s", self.name, connection.client_address, why)
        connection.cut = True
        self.cut_socket(connection.request)

    def _notice_full(self, now: float) -> None:
        if now - self._noticed >= _FULL_NOTICE:
            self._noticed = now
            log.info(
                "%s: all %d connection slots are taken; clients still sending their request "
                "are cut after %g s or replaced (at most one such line a minute)",
                self.name,
                self.capacity,
                self.deadline,
            )

    def _run(self, connection: _Connection) -> None:
        try:
            self.finish_request(connection.request, connection.client_address)
        except Exception:
            self.handle_error(connection.request, connection.client_address)
        finally:
            self.shutdown_request(connection.request)
            with self._lock:
                self._served.remove(connection)
                self._schedule()
