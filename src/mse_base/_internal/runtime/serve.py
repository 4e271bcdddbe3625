"""Serve a loaded application over HTTP(S) from this one process.

Gramine's manifest forbids subprocesses, so every server whose runner forks workers is out. The
server is granian's Rust HTTP core (hyper + rustls: TLS, HTTP/1.1 and HTTP/2 by ALPN) driven
in-process the way granian's own worker functions drive it (``granian/server/mt.py``): its I/O
runs on Rust threads that do not hold the GIL, and the app runs on Python threads (WSGI) or on an
event loop in the calling thread (ASGI). Granian's embedded ``Server`` does the same for ASGI only;
driving the worker objects ourselves gives WSGI apps the same core, which is what lets a Flask app
reach several times the throughput of a WSGI-to-ASGI thread bridge. The worker objects are not
granian's documented API, hence the narrow version pin in pyproject and the tests in
``tests/serve``, which fail if a granian release changes them.

``bench/serve_bench.py`` measures this against the original MSE serving path and uvicorn.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from granian._futures import _future_watcher_wrapper, _new_cbscheduler
from granian._granian import ASGIWorker as _GranianASGIWorker
from granian._granian import SocketHolder, WorkerSignal
from granian._granian import WSGIWorker as _GranianWSGIWorker
from granian.asgi import LifespanProtocol
from granian.asgi import _callback_wrapper as _granian_asgi_wrapper
from granian.log import DEFAULT_ACCESSLOG_FMT
from granian.wsgi import _callback_wrapper as _granian_wsgi_wrapper

from mse_base._internal.runtime.application import Application
from mse_base.errors import Error

__all__ = ["MAX_THREADS", "WSGI_THREADS", "ServeError", "TLSFiles", "serve"]

logger = logging.getLogger(__name__)

# Typed aliases of granian's untyped helpers (keeps mypy --strict meaningful at our call sites).
_asgi_wrapper: Callable[..., Any] = _granian_asgi_wrapper
_wsgi_wrapper: Callable[..., Any] = _granian_wsgi_wrapper
_watcher_wrapper: Callable[[Any], Any] = _future_watcher_wrapper
_scheduler: Callable[..., Any] = _new_cbscheduler
_Lifespan: Callable[[Any], Any] = LifespanProtocol
# granian's stub lags its extension module (no metrics argument, no serve_mtr).
_ASGIWorker: Any = _GranianASGIWorker
_WSGIWorker: Any = _GranianWSGIWorker
_SocketHolder: Any = SocketHolder

_BACKLOG = 1024
# Rust I/O threads: TLS and HTTP framing run there without the GIL. Two keep both cores of a
# small enclave busy while Python runs the app; more only add contention (see bench/README.md).
_IO_THREADS = min(2, os.cpu_count() or 1)
# Cap on the Rust runtime's pool for blocking work (granian's default is 512). An enclave has a
# fixed thread budget (sgx.max_threads), so every pool here is small and bounded.
_RUNTIME_BLOCKING_THREADS = 4
# Python threads running a WSGI app: enough that a handler blocking on I/O does not stall the
# others; beyond that the GIL turns more threads into switching (bench/README.md has figures).
WSGI_THREADS = 4
# ASGI apps run on the event loop in the calling thread; granian accepts only 1 here.
_ASGI_THREADS = 1
#: Upper bound on this process's threads while serving: the caller, the Rust I/O threads, the
#: Rust blocking pool, the WSGI threads and a little headroom for the app's own. The manifest's
#: sgx.max_threads must be at least this.
MAX_THREADS = 1 + _IO_THREADS + _RUNTIME_BLOCKING_THREADS + WSGI_THREADS + 8
_PY_THREADS_IDLE_TIMEOUT = 30
# TLS 1.2 stays allowed (hypercorn, the original server, allowed it too) so that RA-TLS clients
# built on older TLS stacks can still connect; rustls offers only AEAD suites with forward secrecy.
_TLS_MIN = "tls1.2"


class ServeError(Error):
    """The server could not start: address in use, unreadable certificate or key, ..."""

    exit_code = 1


@dataclass(frozen=True)
class TLSFiles:
    """PEM certificate (chain) and private key the server presents."""

    certfile: Path
    keyfile: Path


def serve(
    app: Application,
    *,
    bind: str,
    port: int,
    tls: TLSFiles | None,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then stop cleanly and return.

    With ``tls`` the server speaks HTTPS and offers HTTP/2 and HTTP/1.1 by ALPN; without it, plain
    HTTP (``mse-test``). ``on_ready`` runs once the socket listens. No process is ever spawned.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ServeError("serve() must run in the main thread, which receives SIGTERM")
    ssl_args = _ssl_args(tls)
    listener = _listen(bind, port)
    access_fmt = DEFAULT_ACCESSLOG_FMT if access_log else None
    stop = WorkerSignal()
    stopped = threading.Event()

    def request_stop(signum: int) -> None:
        if not stopped.is_set():
            logger.info("received %s, shutting down", signal.Signals(signum).name)
        stopped.set()
        stop.set()

    # The kernel may hand SIGTERM to any thread, Rust ones included, and Python runs its handler
    # only when the main thread next executes bytecode: a main thread blocked in C would never
    # see it. So the handler only records the signal, and the main thread waits on a wakeup
    # descriptor the interpreter writes each signal's number to (asyncio's add_signal_handler
    # does the same for the ASGI loop). The handler must not stop the server itself: it can
    # interrupt request_stop halfway, inside a lock that the second call would then wait for.
    received: list[int] = []
    waker, wakee = socket.socketpair()
    waker.setblocking(False)
    previous_fd = signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    job = _Job(app.target, listener, ssl_args, access_fmt, stop, on_ready)
    try:
        if app.interface == "wsgi":
            _serve_wsgi(job)
            while not stopped.is_set():
                # Each byte is the number of a signal that arrived, whichever thread took it.
                for signum in wakee.recv(64):
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        request_stop(signum)
        else:
            _serve_asgi(job, received, request_stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        waker.close()
        wakee.close()
        # Still ours only if no worker took it (an ASGI lifespan startup failed, say).
        if listener.fileno() != -1:
            listener.close()
    logger.info("server stopped")


def _ssl_args(tls: TLSFiles | None) -> tuple[Any, ...]:
    if tls is None:
        return (False, None, None, None, _TLS_MIN, None, [], False)
    # Load once with Python's ssl so that a bad file gives a clear message naming the files
    # before anything listens; granian reads them only when its worker starts.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(
            f"cannot load TLS certificate {tls.certfile} with key {tls.keyfile}: {exc}"
        ) from exc
    return (True, str(tls.certfile), str(tls.keyfile), None, _TLS_MIN, None, [], False)


def _listen(bind: str, port: int) -> socket.socket:
    # Bound here rather than by granian's ListenerSpec, which sets SO_REUSEPORT: with it a second
    # server on a busy port starts silently and the kernel splits connections between the two.
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:
        raise ServeError(
            f"bind address {bind!r} is not an IP address (use 0.0.0.0, ::, 127.0.0.1, ...)"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted server take the port while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it, and granian counts on it: with Nagle's algorithm on,
        # a response's last segment waits for the client's delayed ACK (about 40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((bind, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {bind} is already in use: stop what listens there or pick "
                "another --port"
            ) from exc
        raise ServeError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc
    return sock


def _worker_args(py_threads: int) -> tuple[Any, ...]:
    return (
        _IO_THREADS,
        _RUNTIME_BLOCKING_THREADS,
        py_threads,
        _PY_THREADS_IDLE_TIMEOUT,
        _BACKLOG,  # backpressure: requests in flight before granian stops accepting
        "auto",  # HTTP/1.1, and HTTP/2 when ALPN (or prior knowledge) asks for it
        None,
        None,
    )


@dataclass(frozen=True)
class _Job:
    """What either worker is given: the app, the socket it takes over, TLS, logging, the stop."""

    target: object
    listener: socket.socket
    ssl_args: tuple[Any, ...]
    access_fmt: str | None
    stop: WorkerSignal
    on_ready: Callable[[], None] | None


def _serve_wsgi(job: _Job) -> None:
    """Start the WSGI worker; it runs on its own threads until ``job.stop`` is set."""
    callback = _wsgi_wrapper(job.target, {}, job.access_fmt)
    worker = _WSGIWorker(
        1,
        (None, _hand_over(job.listener)),
        None,
        *_worker_args(WSGI_THREADS),
        None,  # static files
        *job.ssl_args,
        (None, None),  # metrics
    )
    # The WSGI worker never runs this loop; granian's scheduler only needs one to exist.
    loop = asyncio.new_event_loop()
    try:
        worker.serve_mtr(_scheduler(loop, callback, impl_asyncio=True), loop, job.stop)
    finally:
        loop.close()
    _ready(job.on_ready)


def _new_loop() -> asyncio.AbstractEventLoop:
    # uvloop runs the ASGI app's coroutines faster than asyncio's loop (bench/README.md); the
    # fallback keeps platforms without it working.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _serve_asgi(job: _Job, received: list[int], request_stop: Callable[[int], None]) -> None:
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig)
    try:
        loop.run_until_complete(_run_asgi(loop, job, received, request_stop))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        asyncio.set_event_loop(None)
        loop.close()


async def _run_asgi(
    loop: asyncio.AbstractEventLoop,
    job: _Job,
    received: list[int],
    request_stop: Callable[[int], None],
) -> None:
    done = loop.create_future()
    # Registered before the lifespan startup so that a SIGTERM during it is not lost; granian
    # may run this callback from one of its own threads.
    job.stop.add_cb(lambda: loop.call_soon_threadsafe(_set_done, done))
    lifespan = _Lifespan(job.target)
    await lifespan.startup()
    if lifespan.interrupt:
        # granian logs the app's own failure message; an exception, if any, is named here.
        reason = f": {type(lifespan.exc).__name__}: {lifespan.exc}" if lifespan.exc else ""
        raise ServeError(f"the application's ASGI lifespan startup failed{reason}")
    callback = _watcher_wrapper(_asgi_wrapper(job.target, {}, lifespan.state, job.access_fmt))
    worker = _ASGIWorker(
        1,
        (None, _hand_over(job.listener)),
        None,
        *_worker_args(_ASGI_THREADS),
        True,  # websockets
        None,  # static files
        *job.ssl_args,
        (None, None),  # metrics
    )
    worker.serve_mtr(_scheduler(loop, callback, impl_asyncio=True), loop, job.stop)
    _ready(job.on_ready)
    if received:
        # Arrived before the loop's own handlers were in place.
        request_stop(received[0])
    await done
    await lifespan.shutdown()


def _hand_over(listener: socket.socket) -> SocketHolder:
    # granian's worker takes the descriptor over and closes it when it stops. Its runtime
    # (tokio) needs it non-blocking: a blocking accept stalls a whole I/O thread.
    listener.setblocking(False)
    holder: SocketHolder = _SocketHolder(listener.detach(), False, _BACKLOG)
    return holder


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ready(on_ready: Callable[[], None] | None) -> None:
    if on_ready is not None:
        on_ready()
