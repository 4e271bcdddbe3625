"""Push provisioning inside the enclave: one valid request, then the app.

With ``--provision push`` the bootstrap serves nothing but ``POST /mse/provision``
(:mod:`mse_base._internal.provision.protocol`) on the app's port, over its RA-TLS certificate,
until exactly one request passes every check: size, JSON shape, the deployment UUID, and for
encrypted code a key that decrypts it. What it carries goes to enclave memory only (Gramine's
tmpfs in SGX; the private 0700 directory in the work directory, removed on exit, in simulation):
the secrets as one 0600 JSON file named by ``MSE_SECRETS``, the decrypted code as a tree the app
is imported from. The listener is then closed and the app served on the same port; from then on
the provisioning path answers 409.

Requests are logged (method, path with control characters escaped, client, status, reason),
never their bodies. Slow or idle clients cannot hold the endpoint: each connection has
:data:`_CONNECTION_TIMEOUT` seconds in all for its handshake and request, at most
:data:`_MAX_CONNECTIONS` are served at once, and when all are taken a newcomer may take the
slot of one still sending, fairly between client addresses
(:mod:`mse_base._internal.provision.connections`).

With ``--provision pull`` the enclave asks instead (:func:`pull`): it connects to the measured
``--secrets-server`` with its RA-TLS certificate as TLS client certificate, trusts only the
measured CA for the server, and installs the answer the same way. An untrusted server ends the
enclave at once; an unreachable one is retried until ``--provision-timeout``.

Either way the :class:`Installer` applies what arrived: with ``--certificate``, the TLS key after
checking it is the measured leaf's; with ``sealed_secrets``, the sealed state (runtime.sealed),
written last. A state sealed earlier is restored (:func:`restore`) instead of either, with no
endpoint and no network: mse-run moves it aside when the host asks for fresh provisioning.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import http.server
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from mse_base._internal.enclave.codetar import read_encrypted, unpack_code
from mse_base._internal.enclave.deployment import Deployment
from mse_base._internal.enclave.requirements import check_requirements
from mse_base._internal.files import private_key_pem, write_private
from mse_base._internal.provision import codefile
from mse_base._internal.provision.connections import SlotServer
from mse_base._internal.provision.protocol import (
    MAX_BODY,
    PATH,
    PULL_PATH,
    Payload,
    Refused,
    loggable,
    parse_payload,
    parse_release,
)
from mse_base._internal.runtime.application import Application
from mse_base._internal.runtime.sealed import SealedState
from mse_base._internal.runtime.serve import TLSFiles
from mse_base.errors import Error, UsageError

log = logging.getLogger(__name__)

#: The environment variable naming the provisioned secrets file (read by :mod:`mse_base.secrets`).
SECRETS_ENV = "MSE_SECRETS"
SECRETS_NAME = "secrets.json"
DECRYPTED_CODE_DIR = "app"
# The CA-issued chain (mse-run --certificate) and its provisioned key, in enclave memory.
APP_CERT_NAME = "app-cert.pem"
APP_KEY_NAME = "app-key.pem"
# A connection gets this long in all from the moment it is served to send its request: the TLS
# handshake, the request line, headers and body, however slowly it trickles them. The owner's
# client verifies the certificate between handshake and request, which may fetch collateral.
_CONNECTION_TIMEOUT = 60.0
# Connections served at once, each on its own thread: within the enclave's thread budget
# (sgx.max_threads), whatever the number of clients. More wait unread, up to _QUEUE.
_MAX_CONNECTIONS = 16
_QUEUE = 64
# A served connection keeps its slot at least this long against newcomers from its own address
# or from one holding one slot fewer (connections.SlotServer says who may take whose slot);
# against addresses holding more slots than its own, until its deadline. Enough for the owner's
# handshake and verification, short enough that a newcomer behind a shared address waits little.
_GRACE = 10.0
# A body over the limit is read and dropped up to this much, so the client can read its 413.
_MAX_DRAIN = 16 << 20


@dataclass(frozen=True)
class Provisioned:
    code_dir: Path
    secrets_path: Path
    secrets: int
    # The CA-issued certificate and its provisioned key (mse-run --certificate), else None.
    tls: TLSFiles | None = None
    # What the log says: decrypted code, a restart from the sealed state, sealed just now.
    decrypted: bool = False
    restored: bool = False
    sealed: bool = False


class Installer:
    """Applies one accepted payload; refuses (changing nothing) what cannot be applied."""

    def __init__(
        self, deployment: Deployment, memory_dir: Path, code_dir: Path, sealed: SealedState
    ) -> None:
        self.deployment = deployment
        self.memory_dir = memory_dir
        self.code_dir = code_dir
        self.sealed = sealed

    def install(self, payload: Payload, *, restoring: bool = False) -> Provisioned:
        # Everything that can be refused is checked before anything is written.
        tls_key = self._tls_key(payload.tls_key)
        sealing = payload.sealed_secrets is not None and not restoring
        sealed = self.sealed.seal(payload) if sealing else None
        code_dir = self._code(payload.code_key)
        tls = None
        if tls_key is not None and self.deployment.certificate is not None:
            tls = TLSFiles(self.memory_dir / APP_CERT_NAME, self.memory_dir / APP_KEY_NAME)
            write_private(tls.keyfile, private_key_pem(tls_key))
            write_private(tls.certfile, self.deployment.certificate.encode("ascii"))
        path = self.memory_dir / SECRETS_NAME
        secrets = payload.app_secrets()
        write_private(path, json.dumps(secrets).encode("utf-8"))
        if sealed is not None:
            # Last: a refused payload never reaches the sealed state.
            self.sealed.write(sealed)
        return Provisioned(
            code_dir,
            path,
            len(secrets),
            tls,
            decrypted=self.deployment.encrypted_code,
            restored=restoring,
            sealed=sealing,
        )

    def _tls_key(self, pem: str | None) -> PrivateKeyTypes | None:
        certificate = self.deployment.certificate
        if certificate is None:
            if pem is not None:
                raise Refused(400, "this enclave has no --certificate: send no 'tls_key'")
            return None
        if pem is None:
            raise Refused(400, "this enclave serves its --certificate: the request needs 'tls_key'")
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):
            raise Refused(400, "'tls_key' is not an unencrypted PEM private key") from None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        leaf = self.deployment.certificate_leaf()
        assert leaf is not None  # certificate is set
        if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
            raise Refused(422, "'tls_key' is not the private key of this enclave's --certificate")
        return key

    def _code(self, key: bytes | None) -> Path:
        if not self.deployment.encrypted_code:
            if key is not None:
                raise Refused(400, "this enclave's code is not encrypted: send no 'code_key'")
            return self.code_dir
        if key is None:
            raise Refused(400, "this enclave's code is encrypted: the request needs 'code_key'")
        source = self.code_dir / codefile.ENCRYPTED_NAME
        try:
            sealed = read_encrypted(source, "the enclave's code")
        except UsageError as err:
            raise Error(f"cannot read the encrypted code: {err}") from None
        try:
            plaintext = codefile.decrypt(sealed, key, "the enclave's code")
        except codefile.WrongKey:
            raise Refused(422, "'code_key' does not decrypt this enclave's code") from None
        tar = self.memory_dir / "code.tar"
        target = self.memory_dir / DECRYPTED_CODE_DIR
        write_private(tar, plaintext)
        shutil.rmtree(target, ignore_errors=True)  # left by an attempt that failed later
        try:
            unpack_code(tar, target, in_place=True)
            # mse-run could not read it on the host: its requirements are checked here.
            check_requirements(target)
        except Error as err:  # a bad tar, unmet requirements: the code, not the enclave
            shutil.rmtree(target, ignore_errors=True)
            raise Refused(
                422, "the decrypted code cannot run here", detail=err.diagnostics()
            ) from None
        finally:
            tar.unlink(missing_ok=True)
        return target


class _Endpoint:
    """The one-shot state: the first request that installs wins, every later one gets 409."""

    def __init__(self, expected_uuid: str, installer: Installer) -> None:
        self.expected_uuid = expected_uuid.encode()
        self.installer = installer
        self.lock = threading.Lock()
        self.result: Provisioned | None = None
        self.finished = threading.Event()

    def taken(self) -> bool:
        return self.result is not None

    def post(
        self, headers: Any, rfile: Any, received: Callable[[], bool] = lambda: True
    ) -> tuple[int, str, str]:
        """The status, reason (logged) and detail (for the client only) of one POST.

        The body is read here; ``received`` is told once it is whole, and the request goes no
        further if it answers False (the connection was cut meanwhile).
        """
        if headers.get("Transfer-Encoding") is not None or headers.get("Content-Length") is None:
            return 411, "send the body with a Content-Length", ""
        try:
            length = int(headers["Content-Length"])
        except ValueError:
            length = -1
        if length < 0:
            return 400, "invalid Content-Length", ""
        if length > MAX_BODY:
            _drain(rfile, min(length, _MAX_DRAIN))
            return 413, f"the body is over {MAX_BODY} bytes", ""
        body = rfile.read(length)
        if len(body) != length:
            return 400, "the body is shorter than its Content-Length", ""
        if not received():
            return 408, f"no whole request within {_CONNECTION_TIMEOUT:g} s", ""
        try:
            payload = parse_payload(body)
            if not hmac.compare_digest(payload.uuid.encode(), self.expected_uuid):
                return 401, "wrong uuid: this enclave was deployed with another --uuid", ""
            with self.lock:
                if self.taken():
                    return 409, "already provisioned", ""
                self.result = self.installer.install(payload)
        except Refused as refused:
            return refused.status, str(refused), refused.detail
        return 200, "provisioned", ""


def _drain(rfile: Any, size: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        while size > 0:
            chunk = rfile.read(min(size, 1 << 16))
            if not chunk:
                return
            size -= len(chunk)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "mse-provision"
    sys_version = ""

    def handle(self) -> None:
        tls = self.request
        assert isinstance(tls, ssl.SSLSocket)
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError) as err:
            # Port probes and certificate fetches (mse-run's own check) end here.
            log.debug(
                "provisioning endpoint: handshake with %s ended: %s", self.client_address, err
            )
            return
        super().handle()

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, f"only POST {PATH} is served until the enclave is provisioned")
            return
        endpoint = self.server.endpoint
        status, reason, detail = 500, "the enclave failed while installing it (see its log)", ""
        try:
            status, reason, detail = endpoint.post(
                self.headers, self.rfile, lambda: self.server.received(self.request)
            )
        except Error as err:
            log.error("provisioning failed: %s", err.diagnostics())
            self.server.failure = err
        finally:
            self._answer(status, reason, detail)
            if endpoint.result is not None or self.server.failure is not None:
                endpoint.finished.set()

    def _other(self) -> None:
        if self.path.split("?", 1)[0] == PATH:
            self._answer(405, f"use POST {PATH}")
        else:
            self._answer(404, f"only POST {PATH} is served until the enclave is provisioned")

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def _answer(self, status: int, reason: str, detail: str = "") -> None:
        told = f"{reason}: {detail}" if detail else reason
        body = json.dumps({"status": told} if status == 200 else {"error": told}).encode()
        log.info(
            "provisioning request from %s: %s %s -> %d %s",
            self.client_address[0],
            self.command,
            loggable(self.path, 200),
            status,
            reason,
        )
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _answer logs every request, without its body

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("provisioning endpoint: " + format, *args)


class _Server(SlotServer, http.server.HTTPServer):
    allow_reuse_address = True
    capacity = _MAX_CONNECTIONS
    queue = _QUEUE
    deadline = _CONNECTION_TIMEOUT
    grace = _GRACE
    name = "provisioning endpoint"

    def __init__(self, bind: str, port: int, context: ssl.SSLContext, endpoint: _Endpoint) -> None:
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.context = context
        self.endpoint = endpoint
        self.failure: Error | None = None
        super().__init__((bind, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own would resolve our host name (getfqdn): a DNS query for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "mse", int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Per operation, for writes to a client that does not read; the slot's deadline bounds
        # the request as a whole. The handshake runs in the connection's thread.
        sock.settimeout(_CONNECTION_TIMEOUT)
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("provisioning endpoint: connection from %s failed", client_address, exc_info=True)


def receive(installer: Installer, ratls: TLSFiles) -> Provisioned | None:
    """Serve the provisioning endpoint over ``ratls`` until one push is accepted; None if
    stopped first.

    Raises :class:`Error` when ``--provision-timeout`` passes with nothing accepted.
    """
    deployment = installer.deployment
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(ratls.certfile, ratls.keyfile)
    endpoint = _Endpoint(str(deployment.deployment_id), installer)
    try:
        server = _Server(deployment.bind, deployment.port, context, endpoint)
    except OSError as err:
        raise Error(
            f"cannot listen on {deployment.bind}:{deployment.port} for provisioning: "
            f"{err.strerror or err}"
        ) from None
    stopped = threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="mse-provision", daemon=True)
    with server, _stop_on_sigterm(stopped, endpoint.finished):
        thread.start()
        log.info(
            "waiting for provisioning: mse-secrets push https://%s:%d (timeout %d s)",
            deployment.host,
            deployment.port,
            deployment.provision_timeout,
        )
        try:
            _wait(endpoint.finished, deployment.provision_timeout)
        finally:
            server.shutdown()
    if server.failure is not None:
        raise server.failure
    if stopped.is_set():
        # Checked before the result: a SIGTERM that lands just after a push was accepted would
        # otherwise be lost (this handler is gone once the app's server installs its own), and
        # the enclave would go on serving after its supervisor asked it to stop.
        log.info("stopped before provisioning; the app was not started")
        return None
    if endpoint.result is not None:
        return _provisioned(endpoint.result)
    raise Error(
        f"no provisioning within {deployment.provision_timeout} s (--provision-timeout): the "
        "app was not started; push with mse-secrets push while the enclave waits"
    )


def _provisioned(result: Provisioned) -> Provisioned:
    os.environ[SECRETS_ENV] = str(result.secrets_path)
    done = [f"{result.secrets} secret(s)"]
    if result.decrypted:
        done.append("code decrypted")
    if result.tls is not None:
        done.append("--certificate's key installed")
    if result.sealed:
        done.append("sealed for restarts")
    how = "restored from the sealed state" if result.restored else "provisioned"
    log.info("%s: %s; starting the app", how, ", ".join(done))
    return result


def restore(installer: Installer) -> Provisioned:
    """Install what this enclave sealed earlier: no owner, no network.

    Raises :class:`Error` when it cannot be unsealed or no longer fits this enclave.
    """
    log.info("restarting from the sealed state %s", installer.sealed.path)
    payload = installer.sealed.load()
    try:
        return _provisioned(installer.install(payload, restoring=True))
    except Refused as refused:
        raise Error(
            f"the sealed state {installer.sealed.path} does not fit this enclave: {refused}; "
            "the app was not started"
        ) from None


_PULL_RETRY = 2.0
# A refusal is logged whole (its reason names the failed check); this only bounds what a
# server could make the enclave write.
_MAX_REASON = 4000


def pull(installer: Installer, ratls: TLSFiles) -> Provisioned | None:
    """Fetch the secrets from the measured secrets server, presenting ``ratls``; None if
    stopped first.

    Raises :class:`Error` (the app is then never started) when the server is not trusted,
    refuses this enclave, answers something unusable, or stays unreachable until the timeout.
    """
    deployment = installer.deployment
    assert deployment.secrets_server is not None and deployment.secrets_server_ca is not None
    server = deployment.secrets_server
    host, _, port = server.removeprefix("https://").rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context(cadata=deployment.secrets_server_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(ratls.certfile, ratls.keyfile)
    stopped = threading.Event()
    deadline = time.monotonic() + deployment.provision_timeout
    log.info("fetching secrets from %s (timeout %d s)", server, deployment.provision_timeout)
    with _stop_on_sigterm(stopped, stopped):
        while True:
            try:
                status, body = _fetch(host, int(port), context)
                break
            except ssl.SSLCertVerificationError as err:
                raise Error(
                    f"the secrets server {server} is not trusted ({err.verify_message}): its "
                    "certificate must chain to --secrets-server-ca and name its host; the app "
                    "was not started"
                ) from None
            except (OSError, http.client.HTTPException) as err:
                if time.monotonic() >= deadline:
                    raise Error(
                        f"the secrets server {server} did not answer within "
                        f"{deployment.provision_timeout} s (--provision-timeout; last: {err}); "
                        "the app was not started"
                    ) from None
                log.info("secrets server %s: %s; retrying", server, err)
            if _wait(stopped, _PULL_RETRY):
                log.info("stopped before provisioning; the app was not started")
                return None
    if status != 200:
        raise Error(
            f"the secrets server {server} refused this enclave: {status} {_reason(body)}; the "
            "app was not started"
        )
    try:
        result = installer.install(parse_release(body))
    except Refused as refused:
        raise Error(
            f"the secrets server {server} answered what this enclave cannot use: {refused}; the "
            "app was not started"
        ) from None
    return _provisioned(result)


def _fetch(host: str, port: int, context: ssl.SSLContext) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        host, port, context=context, timeout=_CONNECTION_TIMEOUT
    )
    try:
        connection.request("GET", PULL_PATH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(MAX_BODY + 1)
    finally:
        connection.close()
    if len(body) > MAX_BODY:
        raise http.client.HTTPException(f"an answer over {MAX_BODY} bytes")
    return response.status, body


def _reason(body: bytes) -> str:
    try:
        text = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        text = ""
    return loggable(text, _MAX_REASON) or "(no reason given)"


# How long the main thread blocks at a time while it waits.
_SLICE = 0.25


def _wait(event: threading.Event, seconds: float) -> bool:
    """``event.wait(seconds)`` in short slices.

    Python runs a signal handler only when the main thread executes bytecode, and a wait blocked
    in the kernel (or in Gramine's emulation of it) may not be interrupted by the signal: so
    SIGTERM is seen within a slice, not at the end of the timeout.
    """
    deadline = time.monotonic() + seconds
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        event.wait(min(left, _SLICE))
    return True


@contextlib.contextmanager
def _stop_on_sigterm(stopped: threading.Event, wake: threading.Event) -> Iterator[None]:
    def on_signal(_signum: int, _frame: object) -> None:
        stopped.set()
        wake.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_Scope = MutableMapping[str, Any]
_CONFLICT = json.dumps({"error": "already provisioned"}).encode()


def refuse_second_push(app: Application) -> Application:
    """``app`` with the provisioning path answered 409, as the endpoint answered once it was used.

    So a second push gets the same answer after the app started as during the switch.
    """
    inner: Any = app.target
    if app.interface == "wsgi":

        def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == PATH:
                start_response(
                    "409 Conflict",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(_CONFLICT)))],
                )
                return [_CONFLICT]
            result: Iterable[bytes] = inner(environ, start_response)
            return result

        return replace(app, target=wsgi)

    async def asgi(
        scope: _Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") == "http" and scope.get("path") == PATH:
            await send(
                {
                    "type": "http.response.start",
                    "status": 409,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _CONFLICT})
            return
        await inner(scope, receive, send)

    return replace(app, target=asgi)
