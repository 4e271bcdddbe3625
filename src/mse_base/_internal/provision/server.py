"""``mse-secrets serve``: release the owner's secrets to every enclave the policy accepts (pull).

Each enclave connects with its RA-TLS certificate as TLS client certificate. TLS proves the
client holds that certificate's key (CertificateVerify); the verifier checks that the quote
inside binds the key and that the enclave matches the policy, exactly as ``mse-verify`` does.
Only then does the answer carry the secrets; anything else gets 403 and nothing. A 403 names
the failed check and what the client's own certificate showed, never what the policy allows
(the full reason goes to the server's log).

Connections are served in bounded slots (:mod:`.connections`): at most :data:`_MAX_CONNECTIONS`
threads, and each client has :data:`_CONNECTION_TIMEOUT` seconds in all for its handshake and
request, so idle or trickling clients cannot exhaust the server or keep enclaves out.

Python's :mod:`ssl` cannot accept a client certificate that no CA issued (it has no verification
callback), and an RA-TLS certificate is self-signed by design, so the TLS layer here is
pyOpenSSL, whose callback accepts any certificate and leaves the decision to the verifier. The
server keeps no state between requests: copies behind a load balancer answer alike.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import socket
import socketserver
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mse_base._internal.extras import install_command
from mse_base._internal.provision.connections import SlotServer
from mse_base._internal.provision.protocol import PULL_PATH, loggable
from mse_base.errors import EnvironmentMissing, UsageError, VerificationError

if TYPE_CHECKING:
    from OpenSSL import SSL

    from mse_base.verify import Verifier

log = logging.getLogger(__name__)

# A pulling enclave sends its request right after the handshake: 30 s in all for both is
# generous. The server's own verification afterwards is not counted.
_CONNECTION_TIMEOUT = 30
# Threads at once; a fleet restart pulls in well under a second each, so more only queue.
_MAX_CONNECTIONS = 64
_QUEUE = 256
_GRACE = 10.0


def _ssl() -> Any:
    try:
        from OpenSSL import SSL
    except ImportError:
        raise EnvironmentMissing(
            "mse-secrets serve needs pyOpenSSL (to accept self-signed RA-TLS client "
            "certificates): install it apart from any environment an enclave measures (there it "
            f"would change MRENCLAVE), e.g. {install_command(['serve'])}, then run "
            "~/mse-owner/bin/mse-secrets serve"
        ) from None
    return SSL


def server_context(cert: Path, key: Path) -> SSL.Context:
    openssl = _ssl()
    context: SSL.Context = openssl.Context(openssl.TLS_SERVER_METHOD)
    context.set_min_proto_version(openssl.TLS1_2_VERSION)
    try:
        context.use_certificate_chain_file(str(cert))
        context.use_privatekey_file(str(key))
        context.check_privatekey()
    except openssl.Error as err:
        raise UsageError(
            f"--cert {cert} / --key {key}: not a PEM certificate chain and its private key ({err})"
        ) from None

    def accept_any(*_: object) -> bool:
        # The chain is not the trust anchor: the quote inside is, checked per request.
        return True

    # Asked, not required: a client without a certificate gets a 403 that says so.
    context.set_verify(openssl.VERIFY_PEER, accept_any)
    return context


# Checks of the client's own certificate and quote, before any collateral or policy: their
# reason is about what the client sent.
_OWN_EVIDENCE = ("ratls.", "quote.", "qe_report.", "pck.chain", "pck.extensions")


def refusal(err: VerificationError) -> str:
    """What a refused client is told: the failed check and at most what its own certificate
    showed; never the values the policy allows, nor where the server's collateral comes from.

    A refused enclave writes this to a log its host reads, and anyone may connect; the server's
    own log keeps the full reason.
    """
    check = err.failed_check or "verification"
    partial = err.partial
    if check.startswith(_OWN_EVIDENCE):
        return f"{check}: {err.diagnostics()}"
    what = "refused (the secrets server's log has the reason)"
    if partial is not None:
        allows = "is not one the policy allows"
        shown = {
            "policy.mrenclave": f"MRENCLAVE {_hex(partial.mrenclave)} {allows}",
            "policy.mrsigner": f"MRSIGNER {_hex(partial.mrsigner)} {allows}",
            "policy.isv_prod_id": f"ISV product ID {partial.isv_prod_id} {allows}",
            "policy.isv_svn": f"ISV SVN {partial.isv_svn} is below the policy's minimum",
            "policy.debug": "the enclave runs in DEBUG mode, which the policy does not allow",
            "policy.tcb_status": f"TCB status {partial.tcb_status} {allows}",
            "tcb.revoked": "the platform's TCB level is revoked",
        }
        what = shown.get(check, what)
    return f"{check}: {what}"


def _hex(value: bytes | None) -> str:
    return "(unknown)" if value is None else value.hex()


class _Reader(io.RawIOBase):
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        openssl = _ssl()
        try:
            return int(self.connection.recv_into(buffer))
        except (openssl.ZeroReturnError, openssl.SysCallError):
            return 0
        except openssl.WantReadError:
            raise TimeoutError("the client sent nothing in time") from None


class _Writer(io.RawIOBase):
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.connection.sendall(bytes(data))
        return len(data)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SecretsServer
    server_version = "mse-secrets"
    sys_version = ""

    def setup(self) -> None:
        openssl = _ssl()
        sock: socket.socket = self.request
        # pyOpenSSL reads the descriptor itself: a Python socket timeout would make it
        # non-blocking, so the kernel's own timeouts bound a silent client instead.
        timeout = struct.pack("ll", _CONNECTION_TIMEOUT, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        self.tls = openssl.Connection(self.server.context, sock)
        self.tls.set_accept_state()
        self.tls.do_handshake()
        self.rfile = io.BufferedReader(_Reader(self.tls))
        self.wfile = _Writer(self.tls)  # type: ignore[assignment]

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            self.tls.shutdown()

    def do_GET(self) -> None:
        if not self.server.received(self.request):
            return  # cut at its deadline just as its request arrived
        if self.path.split("?", 1)[0] != PULL_PATH:
            self._answer(404, {"error": f"only GET {PULL_PATH} is served"}, "not found")
            return
        certificate = self.tls.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            self._answer(403, {"error": "no client certificate: connect with the enclave's "
                               "RA-TLS certificate"}, "no client certificate")  # fmt: skip
            return
        try:
            result = self.server.verify(certificate)
        except VerificationError as err:
            told = {"error": refusal(err), "failed_check": err.failed_check or ""}
            self._answer(403, told, loggable(err.diagnostics(), 2000))
            return
        self._answer(200, None, f"released to MRENCLAVE {result.mrenclave.hex()}")

    def _answer(self, status: int, error: dict[str, str] | None, note: str) -> None:
        body = self.server.release if error is None else json.dumps(error).encode()
        shown = loggable(self.path, 200)
        log.info("%s: GET %s -> %d %s", self.client_address[0], shown, status, note)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class SecretsServer(SlotServer, http.server.HTTPServer):
    allow_reuse_address = True
    capacity = _MAX_CONNECTIONS
    queue = _QUEUE
    deadline = _CONNECTION_TIMEOUT
    grace = _GRACE
    name = "mse-secrets serve"

    def __init__(
        self,
        address: tuple[str, int],
        context: SSL.Context,
        verifier: Verifier,
        release: bytes,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.context = context
        self.verifier = verifier
        # The one answer every accepted enclave gets (encoded once; never logged).
        self.release = release
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "mse-secrets", int(self.server_address[1])

    def verify(self, certificate: Any) -> Any:
        from cryptography.hazmat.primitives import serialization

        return self.verifier.verify_certificate(
            certificate.public_bytes(serialization.Encoding.DER)
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)
