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
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization

from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE, fetch_certificate
from mse_base._internal.enclave import manifest as mf
from mse_base._internal.enclave import pipeline
from mse_base._internal.files import InputRefused, read_limited
from mse_base.errors import Error, VerificationError

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Prepared
    from mse_base._internal.simulation.pki import SimulationPKI
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


def exit_code(returncode: int) -> int:
    """The enclave's exit status as a shell reports it: a death by signal N is 128 + N.

    Popen reports such a death as -N, which a plain ``sys.exit`` would turn into 256 - N.
    """
    return 128 - returncode if returncode < 0 else returncode


class _Enclave:
    """What differs between the supervised modes; :func:`_supervise` does the rest.

    How to start the process, how to tell that the server on the port is this enclave, and what
    an exit before serving means.
    """

    label = ""

    def start(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def listening(self, address: str, port: int) -> bool:
        """Whether the enclave serves its port (a plain answer may be another process's)."""
        raise NotImplementedError

    def served_is_ours(self, served: bytes) -> bool:
        """Checked before verification, on the certificate bytes."""
        return True

    def result_is_ours(self, result: VerificationResult) -> bool:
        """Checked after verification, on what the quote says."""
        return True

    def pki(self) -> SimulationPKI:
        from mse_base._internal.simulation.pki import ensure_simulation_pki

        return ensure_simulation_pki()

    def ready(self) -> None:
        """The RA-TLS check passed."""

    def exited_early(self, child: subprocess.Popen[bytes]) -> int | None:
        """Raise an :class:`Error` saying why, or return None: the enclave said why itself."""
        return None

    def finish(self) -> None:
        """The process ended (after serving or not)."""


class _Simulated(_Enclave):
    """A plain child process: its certificate is a file the host can read."""

    label = "SIMULATION"

    def __init__(self, certificate: Path, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self._certificate = certificate
        self._start = start
        self._expected: bytes | None = None

    def start(self) -> subprocess.Popen[bytes]:
        return self._start()

    def listening(self, address: str, port: int) -> bool:
        # Something else may hold the port (the enclave then fails to bind), so answering is not
        # enough: the certificate served must be the one the enclave wrote, which it does before
        # it binds. The file is read only once the port answers, so never half-written.
        self._expected = _enclave_certificate(address, port, self._certificate)
        return self._expected is not None

    def served_is_ours(self, served: bytes) -> bool:
        return served == self._expected

    def finish(self) -> None:
        # Its memory ends with it, also when it was killed before it could remove it itself.
        shutil.rmtree(self._certificate.parent, ignore_errors=True)


def _sealing_key(prepared: Prepared) -> bytes:
    """The stand-in for the CPU's MRENCLAVE sealing key (see simulation.sealing)."""
    from mse_base._internal.simulation.sealing import stand_in_sealing_key

    root = prepared.request.workdir / pipeline.SEALING_ROOT_KEY_NAME
    return stand_in_sealing_key(root, prepared.sigstruct.mrenclave)


def run_simulation(prepared: Prepared) -> int:
    certificate = pipeline.simulation_certificate(prepared)
    key = _sealing_key(prepared)
    return _supervise(
        prepared, _Simulated(certificate, lambda: pipeline.start_simulation(prepared, key))
    )


def _supervise(prepared: Prepared, enclave: _Enclave) -> int:
    """Start the enclave, verify it once it serves, and wait for it to stop.

    Fails closed: an enclave that could not be verified is stopped. The exit status is the
    enclave's (a death by signal N as 128 + N); a SIGINT or SIGTERM before it was verified stops
    it and gives 128 + that signal (130 for Ctrl-C), never the status of the interrupted start.
    """
    log = logging.getLogger("mse")
    child: subprocess.Popen[bytes] | None = None
    interrupted: list[int] = []
    try:
        child = enclave.start()
        running = child

        def forward(signum: int, _frame: object) -> None:
            interrupted.append(signum)
            running.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        result = _await_enclave(prepared, enclave, child)
        if interrupted:
            # Verified only after the stop was asked for: it stops all the same.
            raise _Interrupted(interrupted[0])
    except _Interrupted as stop:
        _stop(child)
        enclave.finish()
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        return 128 + stop.signum
    except BaseException:
        if child is not None:
            _stop(child)
            enclave.finish()
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        raise
    if result is None:
        enclave.finish()
        if interrupted:
            pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
            return 128 + interrupted[0]
        # Raises when the work directory is worth keeping (what Gramine refused is in it).
        enclave.exited_early(child)
        # It said why on stderr and never served: nothing in its work directory is worth keeping.
        pipeline.discard_workdir(prepared.request.workdir, prepared.claim)
        code = exit_code(int(child.returncode))
        # Never 0 for an enclave that stopped before it served.
        return code or 1
    enclave.ready()
    if isinstance(result, str):
        log.info(
            "serving --certificate (%s): its key reached the enclave after attestation; the "
            "app's port carries no quote; certificate saved to %s",
            enclave.label,
            prepared.request.workdir / "cert.pem",
        )
    else:
        log.info(
            "RA-TLS check passed (%s): MRENCLAVE %s, TCB %s; certificate saved to %s",
            enclave.label,
            result.mrenclave.hex(),
            result.tcb_status,
            prepared.request.workdir / "cert.pem",
        )
    code = exit_code(int(child.wait()))
    enclave.finish()
    return code


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# The enclave serves the measured --certificate: provisioned (from its owner or its sealed state)
# before it served anything mse-run could check; the key proves it holds what the owner sent.
_CERTIFICATE: Literal["certificate"] = "certificate"


def _await_enclave(
    prepared: Prepared, enclave: _Enclave, child: subprocess.Popen[bytes]
) -> VerificationResult | Literal["certificate"] | None:
    """Wait until this enclave serves its port, then verify it; None if it exited first."""
    deployment = prepared.request.deployment
    address = "127.0.0.1" if deployment.bind in ("0.0.0.0", "::") else deployment.bind  # noqa: S104
    first = deployment.certificate_leaf()
    leaf = None if first is None else first.public_bytes(serialization.Encoding.DER)
    served = _served_certificate(child, enclave, address, deployment.port, deployment.host, leaf)
    if served is None:
        return None
    result: VerificationResult | Literal["certificate"]
    if served == leaf:
        result = _CERTIFICATE
    else:
        result = _check_running_enclave(prepared, served, enclave.pki())
        if not enclave.result_is_ours(result):
            raise _not_ours(deployment.port)
    # The certificate as served, byte for byte (as mse-verify --save-cert keeps it).
    (prepared.request.workdir / "cert.pem").write_bytes(ssl.DER_cert_to_PEM_cert(served).encode())
    return result


def _not_ours(port: int) -> Error:
    return Error(
        f"port {port} is served by another process, not this enclave; choose another --port"
    )


def _served_certificate(
    child: subprocess.Popen[bytes],
    enclave: _Enclave,
    address: str,
    port: int,
    server_name: str,
    leaf: bytes | None,
) -> bytes | None:
    """The DER certificate served on ``port`` once ``enclave`` listens there; None if ``child``
    exited first. ``leaf``: the measured --certificate's, also taken as the enclave's."""
    deadline = time.monotonic() + _LISTEN_TIMEOUT
    while True:
        if child.poll() is not None:
            return None
        if enclave.listening(address, port):
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
    if served != leaf and not enclave.served_is_ours(served):
        raise _not_ours(port)
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
    prepared: Prepared, der: bytes, pki: SimulationPKI
) -> VerificationResult:
    """Verify the live server's certificate exactly as a client would, pinned to our MRENCLAVE."""
    from mse_base._internal.dcap.collateral import Collateral
    from mse_base.verify import Policy, Verifier

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
    return verifier.verify_certificate(der)


# Gramine's own log lines: "[P1:T1:python3.11] error: libos_init() failed in ...", and its PAL's,
# which carry no process prefix: "error: PAL failed setting personality failed: ...".
_GRAMINE_ERROR = re.compile(r"^(?:\[P\d+:[^\]]*\] )?error: (?P<message>.*)$")


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


# Under --direct a simulation PKI that does not exist yet is made here, in the work directory,
# and moved to its place (simulation_dir) only once the enclave has passed the RA-TLS check: a
# start that fails leaves nothing outside the work directory.
STAGED_PKI_DIR = "simulation-pki"


class _Direct(_Enclave):
    """The signed manifest under gramine-direct: its files live in Gramine's tmpfs, so ownership
    is proven by the quote, signed with the attestation key mse-run handed this enclave alone."""

    label = "DIRECT"

    def __init__(self, prepared: Prepared) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from mse_base._internal.simulation import pki

        self._prepared = prepared
        self._relays: list[_Relay] = []
        self._staged: Path | None = None
        if pki.simulation_pki_exists():
            self._pki = pki.ensure_simulation_pki()
        else:
            self._staged = prepared.request.workdir / STAGED_PKI_DIR
            shutil.rmtree(self._staged, ignore_errors=True)  # a failed run's, never moved
            self._pki = pki.ensure_simulation_pki(self._staged)
        # A fresh attestation key per run, certified by the simulation PKI's PCK key: only this
        # enclave can sign quotes with it (see simulation.direct for the whole design). Certified
        # as quoting the real measurement: this enclave runs the signed manifest.
        self._quoting_enclave = self._pki.quoting_enclave(
            ec.generate_private_key(ec.SECP256R1()), real_measurement=True
        )

    def start(self) -> subprocess.Popen[bytes]:
        from mse_base._internal.simulation.direct import DirectLaunch

        sigstruct = self._prepared.sigstruct
        launch = DirectLaunch(
            mrenclave=sigstruct.mrenclave,
            mrsigner=sigstruct.mrsigner,
            isv_prod_id=sigstruct.isv_prod_id,
            isv_svn=sigstruct.isv_svn,
            debug=sigstruct.debug,
            quoting_enclave=self._quoting_enclave,
            sealing_key=_sealing_key(self._prepared),
        )
        try:
            child = pipeline.start_direct(self._prepared)
        except OSError as err:
            raise Error(f"gramine-direct could not be started: {err.strerror or err}") from None
        # Gramine's console is the host's stdout: the enclave's stdout and stderr both arrive
        # there; Gramine's own log lines on its stderr. Both go to our stderr, so stdout keeps
        # only what mse-run prints (one JSON object with --json).
        self._relays = [_Relay(child.stdout), _Relay(child.stderr)]
        assert child.stdin is not None
        try:
            child.stdin.write(launch.to_line())
            child.stdin.close()
        except BrokenPipeError:
            pass  # Gramine stopped before reading it; its stderr says why
        return child

    def listening(self, address: str, port: int) -> bool:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            return False

    def result_is_ours(self, result: VerificationResult) -> bool:
        return result.quote.attestation_key == self._quoting_enclave.attestation_public_key

    def pki(self) -> SimulationPKI:
        return self._pki

    def ready(self) -> None:
        if self._staged is None:
            return
        from mse_base._internal.simulation.pki import simulation_dir

        target = simulation_dir()
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Atomic, and refused if another run made one meanwhile (then theirs stays).
            self._staged.rename(target)
        except OSError as err:
            logging.getLogger("mse").warning(
                "the simulation PKI this enclave's quote chains to stays in %s (not moved to %s: "
                "%s); verify with --simulation-ca %s",
                self._staged,
                target,
                err.strerror or err,
                self._staged / "ca.pem",
            )

    def exited_early(self, child: subprocess.Popen[bytes]) -> int | None:
        # The work directory is kept for these two: the manifest is what to look at.
        workdir = self._prepared.request.workdir
        manifest = workdir / f"{pipeline.MANIFEST_NAME}.manifest"
        changed = mf.changed_trusted_files(manifest, workdir)
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            raise Error(
                f"Gramine refused {changed[0]}{more}: changed after signing (its SHA-256 no "
                f"longer matches the manifest: {manifest}); run mse-run again to measure and "
                "sign what is there now"
            )
        gramine = self._relays[1].gramine_error() if self._relays else None
        if gramine is not None:
            raise Error(f"Gramine stopped the enclave: {gramine} (manifest: {manifest})")
        return None

    def finish(self) -> None:
        for relay in self._relays:
            relay.join()


def run_direct(prepared: Prepared) -> int:
    """Run the signed manifest under gramine-direct, verify it, and wait for it to stop."""
    return _supervise(prepared, _Direct(prepared))
