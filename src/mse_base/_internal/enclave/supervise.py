"""Supervision of a running enclave process: start it, forward signals, prove it is ours.

Launching is the pipeline's; this module watches what it launched. It owns the checks that a
port is free before a start, that the server answering on the port is this enclave (its own
certificate, byte for byte, in simulation; under ``--direct``, a quote signed with the attestation
key handed to this enclave alone), and that its RA-TLS certificate verifies against the
measurement the pipeline computed, before the enclave is reported ready.

May import ``mse_base.errors``, the shared ``files`` and ``utc``, ``enclave``, ``dcap``,
``simulation`` and ``mse_base.verify``. Never imports the runtime (that is the enclave's side).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE, fetch_certificate
from mse_base._internal.enclave import manifest as mf
from mse_base._internal.enclave import pipeline
from mse_base._internal.files import InputRefused, read_limited
from mse_base.errors import Error, VerificationError

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Prepared
    from mse_base.verify import VerificationResult


def check_port_free(bind: str, port: int) -> None:
    """Refuse a port something else already listens on, binding it as the server will."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the server does, so a port whose old connections sit in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise Error(
                    f"port {port} on {bind} is already in use by another process; stop it or "
                    "choose another --port"
                ) from None
            # Anything else (a privileged port, say) the enclave meets too and reports itself.


_LISTEN_TIMEOUT = 120.0


def run_simulation(prepared: Prepared) -> int:
    log = logging.getLogger("mse")
    child: subprocess.Popen[bytes] | None = None
    try:
        child = pipeline.start_simulation(prepared)
        running = child

        def forward(signum: int, _frame: object) -> None:
            running.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        result = _await_enclave(prepared, child)
    except BaseException:
        # Fail closed: an enclave we could not verify must not keep serving.
        if child is not None:
            _stop(child)
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        raise
    if result is None:
        # It exited before serving and said why on stderr; it never served, so its work
        # directory holds nothing worth keeping.
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        return int(child.returncode)
    log.info(
        "RA-TLS check passed (SIMULATION): MRENCLAVE %s, TCB %s; certificate saved to %s",
        result.mrenclave.hex(),
        result.tcb_status,
        prepared.request.workdir / "cert.pem",
    )
    return int(child.wait())


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _await_enclave(prepared: Prepared, child: subprocess.Popen[bytes]) -> VerificationResult | None:
    """Wait until this enclave serves its port, then verify it; None if it exited first.

    Something else may hold the port (the enclave then fails to bind), so answering is not
    enough: the certificate served must be the one the enclave wrote, which it does before it
    binds. The file is read only once the port answers, so it is never read half-written.
    """
    deployment = prepared.request.deployment
    address = "127.0.0.1" if deployment.bind in ("0.0.0.0", "::") else deployment.bind  # noqa: S104
    served = _served_certificate(
        child, address, deployment.port, deployment.host, pipeline.simulation_certificate(prepared)
    )
    return None if served is None else _check_running_enclave(prepared, served)


def _await_direct(
    prepared: Prepared, child: subprocess.Popen[bytes], attestation_key: bytes
) -> VerificationResult | None:
    """As :func:`_await_enclave`, for an enclave whose files the host cannot read.

    Its certificate lives in Gramine's tmpfs, so ownership is proven by the quote: it must be
    signed with the attestation key mse-run handed this enclave, and no other.
    """
    deployment = prepared.request.deployment
    address = "127.0.0.1" if deployment.bind in ("0.0.0.0", "::") else deployment.bind  # noqa: S104
    deadline = time.monotonic() + _LISTEN_TIMEOUT
    while True:
        if child.poll() is not None:
            return None
        try:
            with socket.create_connection((address, deployment.port), timeout=1):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Error(
                f"the enclave did not listen on port {deployment.port} within "
                f"{_LISTEN_TIMEOUT:.0f} s"
            )
        time.sleep(0.1)
    try:
        served = fetch_certificate(address, deployment.port, deployment.host)
    except VerificationError as err:
        raise Error(
            f"port {deployment.port} does not answer with this enclave's certificate ({err}): "
            "another process may be serving it; choose another --port"
        ) from None
    result = _check_running_enclave(prepared, served, save=False)
    if result.quote.attestation_key != attestation_key:
        raise Error(
            f"port {deployment.port} is served by another process, not this enclave; choose "
            "another --port"
        )
    _save_certificate(prepared, served)
    return result


def _served_certificate(
    child: subprocess.Popen[bytes], address: str, port: int, server_name: str, cert_path: Path
) -> bytes | None:
    """The DER certificate served on ``port``, once it is known to be ``child``'s; None if
    ``child`` exited first."""
    deadline = time.monotonic() + _LISTEN_TIMEOUT
    while True:
        if child.poll() is not None:
            return None
        expected = _enclave_certificate(address, port, cert_path)
        if expected is not None:
            break
        if time.monotonic() > deadline:
            raise Error(f"the enclave did not listen on port {port} within {_LISTEN_TIMEOUT:.0f} s")
        time.sleep(0.1)
    try:
        served = fetch_certificate(address, port, server_name)
    except VerificationError as err:
        raise Error(
            f"port {port} does not answer with this enclave's certificate ({err}): another "
            "process may be serving it; choose another --port"
        ) from None
    if served != expected:
        raise Error(
            f"port {port} is served by another process, not this enclave; choose another --port"
        )
    return served


def _enclave_certificate(address: str, port: int, cert_path: Path) -> bytes | None:
    """The DER certificate the enclave wrote, once something answers on its port; else None."""
    try:
        with socket.create_connection((address, port), timeout=1):
            pass
    except OSError:
        return None
    try:
        pem = read_limited(cert_path, MAX_CERTIFICATE_SIZE).decode("ascii")
    except InputRefused as err:
        if err.missing:
            # Something answers but the enclave has not written its certificate: not its port
            # yet.
            return None
        raise Error(f"the enclave's certificate {cert_path} {err}") from None
    except UnicodeError as err:
        raise Error(f"cannot read the enclave's certificate {cert_path}: {err}") from None
    try:
        return ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        return None  # not complete yet (or never: the deadline then applies)


def _check_running_enclave(
    prepared: Prepared, der: bytes, *, save: bool = True
) -> VerificationResult:
    """Verify the live server's certificate exactly as a client would, pinned to our MRENCLAVE."""
    from mse_base._internal.dcap.collateral import Collateral
    from mse_base._internal.simulation.pki import ensure_simulation_pki
    from mse_base.verify import Policy, Verifier

    pki = ensure_simulation_pki()
    verifier = Verifier(
        collateral=Collateral.from_directory(pki.collateral_dir),
        policy=Policy(
            mrenclave=frozenset({prepared.sigstruct.mrenclave}),
            mrsigner=prepared.sigstruct.mrsigner,
            allow_debug=prepared.sigstruct.debug,
        ),
        trust_root=pki.ca_certificate,
        simulation=True,
    )
    result = verifier.verify_certificate(der)
    if save:
        _save_certificate(prepared, der)
    return result


def _save_certificate(prepared: Prepared, der: bytes) -> None:
    # The certificate as served, byte for byte (as mse-verify --save-cert keeps it).
    (prepared.request.workdir / "cert.pem").write_bytes(ssl.DER_cert_to_PEM_cert(der).encode())


# Gramine's own log lines: "[P1:T1:python3.11] error: libos_init() failed in ...".
_GRAMINE_ERROR = re.compile(r"^\[P\d+:[^\]]*\] error: (?P<message>.*)$")


class _Relay:
    """Copy one of the enclave's output streams to our stderr, keeping its last lines."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self._stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=50)
        self._thread = threading.Thread(target=self._relay, name="enclave-output", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        # Straight to the descriptor: a thread still inside sys.stderr's buffered writer when the
        # interpreter exits makes Python abort ("could not acquire lock ... at interpreter
        # shutdown"); log records are flushed as they are written, so the order holds.
        fd = sys.stderr.fileno()
        for raw in iter(self._stream.readline, b""):
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            self.lines.append(raw.decode(errors="replace").rstrip())

    def join(self) -> None:
        # EOF comes when gramine-direct exits; a bound so a stuck pipe cannot hang mse-run.
        self._thread.join(timeout=30)

    def gramine_error(self) -> str | None:
        """Gramine's own last error line, if it logged one."""
        for line in reversed(self.lines):
            match = _GRAMINE_ERROR.match(line)
            if match:
                return match.group("message")
        return None


def run_direct(prepared: Prepared) -> int:
    """Run the signed manifest under gramine-direct, verify it, and wait for it to stop."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from mse_base._internal.simulation.direct import DirectLaunch
    from mse_base._internal.simulation.pki import ensure_simulation_pki

    log = logging.getLogger("mse")
    sigstruct = prepared.sigstruct
    # A fresh attestation key per run, certified by the simulation PKI's PCK key: only this
    # enclave can sign quotes with it (see simulation.direct for the whole design).
    attestation_key = ec.generate_private_key(ec.SECP256R1())
    quoting_enclave = ensure_simulation_pki().quoting_enclave(attestation_key)
    launch = DirectLaunch(
        mrenclave=sigstruct.mrenclave,
        mrsigner=sigstruct.mrsigner,
        isv_prod_id=sigstruct.isv_prod_id,
        isv_svn=sigstruct.isv_svn,
        debug=sigstruct.debug,
        quoting_enclave=quoting_enclave,
        sealing_key=DirectLaunch.new_sealing_key(),
    )
    child: subprocess.Popen[bytes] | None = None
    relays: list[_Relay] = []
    try:
        try:
            child = pipeline.start_direct(prepared)
        except OSError as err:
            raise Error(f"gramine-direct could not be started: {err.strerror or err}") from None
        # Gramine's console is the host's stdout: the enclave's stdout and stderr both arrive
        # there; Gramine's own log lines on its stderr. Both go to our stderr, so stdout keeps
        # only what mse-run prints (one JSON object with --json).
        relays = [_Relay(child.stdout), _Relay(child.stderr)]
        assert child.stdin is not None
        try:
            child.stdin.write(launch.to_line())
            child.stdin.close()
        except BrokenPipeError:
            pass  # Gramine stopped before reading it; its stderr says why
        running = child

        def forward(signum: int, _frame: object) -> None:
            running.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        result = _await_direct(prepared, child, quoting_enclave.attestation_public_key)
    except BaseException:
        if child is not None:
            _stop(child)
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        raise
    if result is None:
        for relay in relays:
            relay.join()
        # The work directory is kept for these two: the manifest is what to look at.
        manifest = prepared.request.workdir / f"{pipeline.MANIFEST_NAME}.manifest"
        changed = mf.changed_trusted_files(manifest, prepared.request.workdir)
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            raise Error(
                f"Gramine refused {changed[0]}{more}: changed after signing (its SHA-256 no "
                f"longer matches the manifest: {manifest}); run mse-run again to measure and "
                "sign what is there now"
            )
        gramine = relays[1].gramine_error()
        if gramine is not None:
            raise Error(f"Gramine stopped the enclave: {gramine} (manifest: {manifest})")
        # The enclave said why on stderr (relayed) and never served.
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        return int(child.returncode)
    log.info(
        "RA-TLS check passed (DIRECT): MRENCLAVE %s, TCB %s; certificate saved to %s",
        result.mrenclave.hex(),
        result.tcb_status,
        prepared.request.workdir / "cert.pem",
    )
    code = int(child.wait())
    for relay in relays:
        relay.join()
    return code
