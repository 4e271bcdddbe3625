"""Slow clients against the push endpoint: the owner still gets through.

The attackers (tests/slowclients.py) are real TLS clients on loopback sockets: each completes the
handshake, starts a request and then sends one byte a second, the "slowloris" that used to hold
every slot of the endpoint until ``--provision-timeout``. They come from 127.0.0.2 (another
address than the owner's 127.0.0.1) or from the owner's own address, and reconnect whenever they
are cut off, so the cap stays full for as long as the test runs. The pull server's limits are
tested in test_pull.py, the slot rules themselves in test_connections.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.slowclients import ATTACKER, PUSH_ATTACKERS, Tricklers

from .conftest import Enclave


@pytest.fixture
def tricklers() -> Iterator[list[Tricklers]]:
    started: list[Tricklers] = []
    yield started
    for group in started:
        group.close()


@pytest.mark.parametrize("source", [ATTACKER, "127.0.0.1"], ids=["other-address", "same-address"])
def test_slow_clients_filling_the_push_endpoint_do_not_lock_the_owner_out(
    enclave: Enclave, tricklers: list[Tricklers], source: str
) -> None:
    attack = Tricklers(enclave.port, source, PUSH_ATTACKERS)
    tricklers.append(attack)
    attack.wait_until_live(16)  # every slot of the endpoint held by a slow client
    started = time.monotonic()
    pushed = enclave.push()
    elapsed = time.monotonic() - started
    assert pushed.returncode == 0, pushed.stderr + enclave.log()
    assert elapsed < 90, f"the push took {elapsed:.0f} s"
    enclave.wait_for("serving https://")
