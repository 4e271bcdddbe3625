"""The command-line interface: the only module that parses arguments and prints.

Each console script (``mse-run``, ``mse-test``, ``mse-verify``, ``mse-bootstrap``) has a
``*_main`` function here. Library code raises :class:`mse_base.errors.Error`; :func:`_guard` turns
it into one line on stderr and the error's exit code, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mse_base.errors import Error

if TYPE_CHECKING:
    from mse_base._internal.deployment import Deployment
    from mse_base._internal.pipeline import Prepared, RunRequest, WorkdirSource
    from mse_base.verify import VerificationResult


def _fail(prog: str, err: Error, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {err.diagnostics()}", file=sys.stderr)
    sys.exit(err.exit_code)


def _guard(prog: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=f"{prog}: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        # granian's "Started worker-1" / "Stopping worker-1" say nothing a user acts on.
        logging.getLogger("_granian").setLevel(logging.WARNING)
    try:
        return body(args)
    except Error as err:
        _fail(prog, err, debug)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# --- mse-run -------------------------------------------------------------------------------


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from mse_base import __version__
        from mse_base._internal.manifest import GramineLayout

        layout = GramineLayout.detect()
        gramine = "not installed" if layout is None else layout.version
        print(f"mse-base {__version__}")
        print(f"Gramine: {gramine}")
        print(f"Python: {platform.python_version()}")
        parser.exit()


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mse-run",
        description="Unpack an app, measure and sign its enclave, serve it over RA-TLS.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--size", required=True, help="enclave size, a power of two (512M, 8G)")
    parser.add_argument("--code", required=True, type=Path, help="tar (or .tar.gz) of the app")
    parser.add_argument("--host", required=True, help="name or IP clients use (certificate SAN)")
    parser.add_argument("--application", required=True, help="module:attribute, e.g. app:app")
    parser.add_argument("--uuid", required=True, help="deployment UUID (measured)")
    parser.add_argument(
        "--self-signed", required=True, metavar="EPOCH", help="certificate expiry, Unix time"
    )
    parser.add_argument("--port", default="443", help="TCP port to serve on (default 443)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--workdir", type=Path, help="work directory (default: per deployment)")
    parser.add_argument("--signer-key", type=Path, help="RSA-3072 e=3 enclave signing key")
    parser.add_argument("--dry-run", action="store_true", help="print the measurement and stop")
    parser.add_argument("--memory", action="store_true", help="print the memory budget")
    parser.add_argument("--debug", action="store_true", help="debug enclave, logs, tracebacks")
    parser.add_argument("--force", action="store_true", help="reuse a non-empty work directory")
    parser.add_argument(
        "--simulation", action="store_true", help="run without SGX: simulated quote and measure"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _default_workdir(deployment_id: str) -> tuple[Path, WorkdirSource]:
    state = os.environ.get("XDG_STATE_HOME")
    if state:
        return Path(state) / "mse" / deployment_id, "XDG_STATE_HOME"
    return Path.home() / ".local" / "state" / "mse" / deployment_id, "HOME"


def _progress() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\rhashing trusted files: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def _deployment(args: argparse.Namespace) -> Deployment:
    """The measured parameters, checked the same way by mse-run and inside the enclave."""
    from mse_base._internal import deployment as dep

    return dep.Deployment(
        application=dep.parse_application(args.application),
        host=dep.parse_host(args.host),
        deployment_id=dep.parse_uuid(args.uuid),
        expiry=dep.parse_expiry(args.self_signed),
        bind=dep.parse_bind(args.bind),
        port=dep.parse_port(args.port),
        debug=args.debug,
    )


def _run(args: argparse.Namespace) -> int:
    from mse_base._internal import pipeline
    from mse_base._internal.size import parse_enclave_size

    deployment = _deployment(args)
    enclave_size = parse_enclave_size(args.size)
    if args.simulation and not args.dry_run:
        # Before anything is written; the certificate check after the start still decides.
        _check_port_free(deployment.bind, deployment.port)

    def request(workdir: Path, source: WorkdirSource) -> RunRequest:
        return pipeline.RunRequest(
            deployment=deployment,
            enclave_size=enclave_size,
            code=args.code,
            workdir=workdir,
            signer_key=args.signer_key,
            dry_run=args.dry_run,
            force=args.force,
            mode="simulation" if args.simulation else "sgx",
            workdir_source=source,
        )

    if args.workdir is not None:
        return _run_request(args, request(args.workdir, "--workdir"))
    if args.dry_run:
        # A dry run only prints the measurement: its files go to a directory removed afterwards,
        # so it leaves nothing that would make the real run's default work directory "not empty".
        with _temporary_directory() as workdir:
            return _run_request(args, request(workdir, "temporary"))
    return _run_request(args, request(*_default_workdir(str(deployment.deployment_id))))


@contextlib.contextmanager
def _temporary_directory() -> Iterator[Path]:
    import tempfile

    from mse_base.errors import UsageError

    try:
        directory = tempfile.TemporaryDirectory(prefix="mse-dry-run-", ignore_cleanup_errors=True)
    except OSError as err:
        raise UsageError(
            f"--dry-run: cannot create a temporary work directory ({err.strerror or err}): set "
            "TMPDIR to a writable directory, or pass --workdir DIR"
        ) from None
    with directory as name:
        yield Path(name)


def _check_port_free(bind: str, port: int) -> None:
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


def _run_request(args: argparse.Namespace, request: RunRequest) -> int:
    from mse_base._internal import pipeline
    from mse_base._internal.size import format_size

    prepared = pipeline.prepare(request, None if args.json else _progress())
    summary = prepared.summary()
    left = prepared.request.enclave_size - prepared.trusted_bytes
    summary["memory_left_bytes"] = left
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        tag = " (simulated)" if prepared.simulated else ""
        print(f"MRENCLAVE: {summary['mrenclave']}{tag}")
        print(f"MRSIGNER: {summary['mrsigner']}{tag}", flush=True)
        if args.memory:
            print(f"enclave size: {format_size(prepared.request.enclave_size)}")
            print(
                f"trusted files: {prepared.trusted_files} files, "
                f"{prepared.trusted_bytes / (1 << 20):.1f} MiB"
            )
            print(f"left for the app: {left / (1 << 20):.1f} MiB", flush=True)
    if prepared.signer.throwaway:
        logging.getLogger("mse").warning(
            "no signing key: MRSIGNER comes from a throwaway key and is meaningless"
        )
    if prepared.simulated:
        logging.getLogger("mse").warning(
            "SIMULATION: no SGX enclave; the measurement and quote are simulated"
        )
    if args.dry_run:
        return 0
    if not prepared.simulated:
        return pipeline.launch_sgx(prepared)
    return _run_simulation(prepared)


# Starting includes importing the app and, on a cold cache, creating the simulation PKI.
_LISTEN_TIMEOUT = 120.0


def _run_simulation(prepared: Prepared) -> int:
    from mse_base._internal import pipeline

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
    from mse_base._internal import pipeline

    deployment = prepared.request.deployment
    address = "127.0.0.1" if deployment.bind in ("0.0.0.0", "::") else deployment.bind  # noqa: S104
    served = _served_certificate(
        child, address, deployment.port, deployment.host, pipeline.simulation_certificate(prepared)
    )
    return None if served is None else _check_running_enclave(prepared, served)


def _served_certificate(
    child: subprocess.Popen[bytes], address: str, port: int, server_name: str, cert_path: Path
) -> bytes | None:
    """The DER certificate served on ``port``, once it is known to be ``child``'s; None if
    ``child`` exited first."""
    from mse_base.errors import VerificationError

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
        served = _peer_certificate(address, port, server_name)
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
        pem = cert_path.read_text(encoding="ascii")
    except FileNotFoundError:
        # Something answers but the enclave has not written its certificate: not its port yet.
        return None
    except (OSError, UnicodeError) as err:
        raise Error(f"cannot read the enclave's certificate {cert_path}: {err}") from None
    try:
        return ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        return None  # not complete yet (or never: the deadline then applies)


def _check_running_enclave(prepared: Prepared, der: bytes) -> VerificationResult:
    """Verify the live server's certificate exactly as a client would, pinned to our MRENCLAVE."""
    from mse_base._internal.collateral import Collateral
    from mse_base._internal.simulation import ensure_simulation_pki
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
    # The certificate as served, byte for byte (as mse-verify --save-cert keeps it).
    (prepared.request.workdir / "cert.pem").write_bytes(ssl.DER_cert_to_PEM_cert(der).encode())
    return result


def run_main(argv: Sequence[str] | None = None) -> int:
    args = _run_parser().parse_args(argv)
    return _guard("mse-run", _run, args)


# --- mse-test ------------------------------------------------------------------------------


def _test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mse-test",
        description="Serve the app outside any enclave, over plain HTTP, to check the image.",
    )
    parser.add_argument("--application", required=True, help="module:attribute, e.g. app:app")
    parser.add_argument("--code-dir", type=Path, default=Path("/mse-app"), help="app directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", default="5000", help="TCP port (default 5000)")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    return parser


def _test(args: argparse.Namespace) -> int:
    from mse_base._internal import deployment as dep
    from mse_base._internal.application import load_application
    from mse_base._internal.requirements import check_requirements
    from mse_base._internal.serve import serve
    from mse_base.errors import UsageError

    application = dep.parse_application(args.application)
    bind = dep.parse_bind(args.host)
    port = dep.parse_port(args.port)
    if not args.code_dir.is_dir():
        raise UsageError(
            f"--code-dir {args.code_dir} is not a directory: mount your app there "
            "(docker run -v $PWD:/mse-app ...) or pass --code-dir"
        )
    check_requirements(args.code_dir)
    app = load_application(application, args.code_dir)
    log = logging.getLogger("mse")
    serve(
        app,
        bind=bind,
        port=port,
        tls=None,
        access_log=args.debug,
        on_ready=lambda: log.info(
            "serving %s (%s) on http://%s:%d/ (no enclave)",
            app.spec,
            app.interface.upper(),
            bind,
            port,
        ),
    )
    return 0


def test_main(argv: Sequence[str] | None = None) -> int:
    args = _test_parser().parse_args(argv)
    return _guard("mse-test", _test, args)


# --- mse-bootstrap (runs inside the enclave) ----------------------------------------------


def _bootstrap(args: argparse.Namespace) -> int:
    from mse_base._internal import bootstrap

    deployment = _deployment(args)
    bootstrap.run(deployment)
    return 0


def bootstrap_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mse-bootstrap",
        description="Inside the enclave: attest a fresh TLS key, serve the app.",
    )
    parser.add_argument("--application", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--uuid", required=True)
    parser.add_argument("--self-signed", required=True)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104
    parser.add_argument("--port", default="443")
    parser.add_argument("--debug", action="store_true")
    return _guard("mse-bootstrap", _bootstrap, parser.parse_args(argv))


# --- mse-verify ----------------------------------------------------------------------------


_VERIFY_EPILOG = """\
exit status: 0 verified, 1 rejected (the reason on stderr, or in the JSON), 2 usage error.
Default collateral: Intel PCS (https://api.trustedservices.intel.com), cached under
$XDG_CACHE_HOME/mse/collateral; with --simulation-ca, the collateral/ directory next to it.
--save-cert writes the presented certificate before it is verified (also when it is rejected)
and never replaces an existing file."""


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mse-verify",
        description="Verify an SGX enclave: an RA-TLS server, an RA-TLS certificate or a quote.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("url", nargs="?", help="https://HOST:PORT of an RA-TLS server")
    source.add_argument("--cert", type=Path, metavar="FILE", help="RA-TLS certificate (PEM/DER)")
    source.add_argument("--quote", type=Path, metavar="FILE", help="raw SGX quote")
    expect = parser.add_argument_group("what the enclave must be")
    expect.add_argument(
        "--mrenclave", action="append", default=[], metavar="HEX", help="repeatable"
    )
    expect.add_argument("--mrsigner", metavar="HEX")
    expect.add_argument("--isv-prod-id", type=int, metavar="N")
    expect.add_argument("--min-isv-svn", type=int, metavar="N")
    expect.add_argument(
        "--allow-status",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept this TCB status (UpToDate always passes); repeatable",
    )
    expect.add_argument("--allow-debug", action="store_true", help="accept a debug enclave")
    trust = parser.add_argument_group("collateral and trust")
    collateral = trust.add_mutually_exclusive_group()
    collateral.add_argument("--collateral", type=Path, metavar="DIR")
    collateral.add_argument("--pccs-url", metavar="URL", help="Intel PCS or PCCS base URL")
    trust.add_argument("--at", metavar="ISO-8601", help="verification time (default: now)")
    trust.add_argument(
        "--simulation-ca",
        type=Path,
        metavar="PEM",
        help="trust this simulation CA instead of Intel (simulation quotes only)",
    )
    trust.add_argument(
        "--insecure-allow-stale-crl",
        action="store_true",
        help="accept CRLs past their nextUpdate (weakens revocation checking)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--save-cert",
        type=Path,
        metavar="PATH",
        help="write the presented certificate as PEM to this new file",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return parser


def _hex_option(name: str, value: str, size: int) -> bytes:
    from mse_base.errors import UsageError

    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise UsageError(f"{name} {value!r} must be {size} bytes of hex ({2 * size} digits)")
    return raw


def _verification_time(text: str | None) -> Any:
    from datetime import datetime, timezone

    from mse_base.errors import UsageError

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not an ISO-8601 time; use e.g. 2025-07-01T00:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _read_input(path: Path, what: str) -> bytes:
    from mse_base.errors import UsageError

    try:
        return path.read_bytes()
    except OSError as err:
        raise UsageError(f"{what} {path}: cannot read it ({err.strerror or err})") from None


def _check_save_target(path: Path) -> None:
    """Refuse a ``--save-cert`` path that cannot become a new file, before any network access."""
    from mse_base.errors import UsageError

    if os.path.lexists(path):
        raise UsageError(_save_exists(path))
    if not path.parent.is_dir():
        raise UsageError(
            f"--save-cert {path}: {path.parent} is not a directory; choose a path in an "
            "existing directory"
        )


def _save_exists(path: Path) -> str:
    return (
        f"--save-cert {path}: the file exists and mse-verify never replaces a file; remove it "
        "or choose another path"
    )


def _save_certificate(path: Path, pem: bytes) -> None:
    """Write ``pem`` to ``path`` as a new file.

    O_EXCL, not the earlier check, is what protects: a file or symlink that appeared at ``path``
    since then is refused, never written through.
    """
    from mse_base.errors import UsageError

    try:
        # 0644: a certificate is public.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UsageError(_save_exists(path)) from None
    except OSError as err:
        raise UsageError(
            f"--save-cert {path}: cannot create it ({err.strerror or err}); choose a writable path"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    except OSError as err:
        # The file is ours (O_EXCL): a truncated certificate must not be left behind.
        path.unlink(missing_ok=True)
        raise UsageError(
            f"--save-cert {path}: cannot write it ({err.strerror or err}); choose another path"
        ) from None


def _simulation_collateral_dir(ca_pem: Path) -> Path:
    """The collateral of the simulation PKI ``ca_pem`` belongs to: the ``collateral/`` beside it.

    The PKI's owner (keys readable) gets it re-issued first when stale, as ``mse-run`` would; a
    copied ca.pem is used with whatever collateral was copied beside it.
    """
    from mse_base._internal.simulation import refresh_collateral, simulation_dir
    from mse_base.errors import UsageError

    refresh_collateral(ca_pem.parent)
    directory = ca_pem.parent / "collateral"
    if not directory.is_dir():
        raise UsageError(
            f"--simulation-ca {ca_pem}: no simulation collateral beside it ({directory} is "
            "missing); pass --collateral DIR with the simulation's collateral directory "
            f"({simulation_dir() / 'collateral'}, beside its ca.pem) or copy that directory "
            "beside this ca.pem"
        )
    return directory


def _presented_pem(presented: bytes) -> bytes:
    """The certificate exactly as presented, as PEM: its DER is never re-encoded.

    (A parsed certificate may have been normalised on loading, e.g. Gramine's mbedTLS ones; a
    re-encoded copy would be neither byte-exact evidence nor usable with curl --cacert.)
    """
    from mse_base._internal.ratls import certificate_der

    return ssl.DER_cert_to_PEM_cert(certificate_der(presented)).encode("ascii")


def _fetch_server_certificate(url: str) -> bytes:
    """The DER certificate an RA-TLS server presents; its quote, not a CA, is the trust anchor."""
    from urllib.parse import urlsplit

    from mse_base.errors import UsageError

    parts = urlsplit(url if "//" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"{url!r} is not an https://HOST[:PORT] URL")
    try:
        port = parts.port or 443
    except ValueError:
        raise UsageError(f"{url!r} has an invalid port") from None
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise UsageError(f"{url!r}: the host name is not a valid DNS name") from None
    return _peer_certificate(parts.hostname, port, parts.hostname)


def _peer_certificate(address: str, port: int, server_name: str) -> bytes:
    """The DER certificate a TLS server presents, fetched without any CA check.

    An RA-TLS certificate is self-signed: the quote inside it is the trust anchor, and the
    verifier checks it (and the key binding) afterwards.
    """
    from mse_base.errors import VerificationError

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    where = f"{server_name}:{port}"
    try:
        with (
            socket.create_connection((address, port), timeout=15) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, UnicodeError, ValueError) as err:
        raise VerificationError(f"cannot fetch the certificate from {where}: {err}") from None
    if not der:
        raise VerificationError(f"{where} presented no certificate")
    return der


def _verify(args: argparse.Namespace) -> int:
    from cryptography import x509

    from mse_base._internal import ratls
    from mse_base._internal.collateral import Collateral, CollateralSource
    from mse_base._internal.pccs import INTEL_PCS_URL, PCCSCollateralSource
    from mse_base._internal.simulation import simulation_dir
    from mse_base.errors import UsageError, VerificationError
    from mse_base.verify import TCB_STATUSES, Policy, Verifier

    if not args.debug:
        # cryptography warns about odd encodings in the certificates and CRLs it is handed
        # (the verdict is the verifier's); those warnings would print source lines around the
        # one line a user should read. Only mse-verify: an app's own warnings must stay visible.
        warnings.simplefilter("ignore")
    mrenclaves = frozenset(_hex_option("--mrenclave", v, 32) for v in args.mrenclave)
    for status in args.allow_status:
        if status == "Revoked":
            raise UsageError("--allow-status Revoked: a revoked TCB is never accepted")
        if status not in TCB_STATUSES:
            raise UsageError(
                f"--allow-status {status!r} is not a TCB status; use one of "
                f"{', '.join(sorted(TCB_STATUSES - {'Revoked'}))}"
            )
    mrsigner = _hex_option("--mrsigner", args.mrsigner, 32) if args.mrsigner else None
    for name, value in (("--isv-prod-id", args.isv_prod_id), ("--min-isv-svn", args.min_isv_svn)):
        if value is not None and not 0 <= value <= 0xFFFF:
            raise UsageError(f"{name} {value} must be in 0..65535")
    at = _verification_time(args.at)
    # Local inputs are read first: a typo in a path is reported before any network access.
    quote_bytes = _read_input(args.quote, "--quote") if args.quote is not None else None
    cert_bytes = _read_input(args.cert, "--cert") if args.cert is not None else None
    if args.save_cert is not None:
        if args.quote is not None:
            raise UsageError(
                "--save-cert needs a certificate: use it with an https:// URL or --cert, "
                "not --quote"
            )
        _check_save_target(args.save_cert)

    trust_root = None
    if args.simulation_ca is not None:
        try:
            trust_root = x509.load_pem_x509_certificate(
                _read_input(args.simulation_ca, "--simulation-ca")
            )
        except ValueError:
            raise UsageError(
                f"--simulation-ca {args.simulation_ca}: not a PEM certificate; pass the ca.pem "
                f"of the simulation ({simulation_dir() / 'ca.pem'})"
            ) from None
    collateral: Collateral | CollateralSource
    if args.collateral is not None:
        if not args.collateral.is_dir():
            raise UsageError(
                f"--collateral {args.collateral}: not a directory; pass the directory holding "
                "tcb_info.json, qe_identity.json, the issuer chain and the CRLs"
            )
        collateral = Collateral.from_directory(args.collateral)
    elif args.pccs_url is not None:
        try:
            # A simulation PCCS serves collateral signed under the simulation CA.
            collateral = PCCSCollateralSource(args.pccs_url, trust_root=trust_root)
        except ValueError as err:
            raise UsageError(f"--pccs-url: {err}") from None
    elif args.simulation_ca is not None:
        collateral = Collateral.from_directory(_simulation_collateral_dir(args.simulation_ca))
    else:
        collateral = PCCSCollateralSource(INTEL_PCS_URL)

    policy = Policy(
        mrenclave=mrenclaves or None,
        mrsigner=mrsigner,
        isv_prod_id=args.isv_prod_id,
        min_isv_svn=args.min_isv_svn,
        allow_debug=args.allow_debug,
        allowed_tcb_statuses=frozenset({"UpToDate", *args.allow_status}),
        allow_stale_crls=args.insecure_allow_stale_crl,
    )
    verifier = Verifier(
        collateral=collateral,
        policy=policy,
        trust_root=trust_root,
        simulation=trust_root is not None,
    )
    if args.insecure_allow_stale_crl:
        logging.getLogger(__name__).warning(
            "warning: --insecure-allow-stale-crl: CRLs past their nextUpdate are accepted, so a "
            "recent revocation may go unseen"
        )
    saved = False
    try:
        if quote_bytes is not None:
            result = verifier.verify_quote(quote_bytes, at=at)
        else:
            if cert_bytes is not None:
                presented = cert_bytes
                try:
                    cert = ratls.load_certificate(presented)
                except VerificationError:
                    raise UsageError(
                        f"--cert {args.cert}: not a PEM or DER X.509 certificate"
                    ) from None
            else:
                presented = _fetch_server_certificate(args.url)
                cert = ratls.load_certificate(presented)
            if args.save_cert is not None:
                # Saved before verification: what was presented is evidence worth keeping even
                # when it is rejected; the rejection line then says the file is not trusted.
                _save_certificate(args.save_cert, _presented_pem(presented))
                saved = True
            result = verifier.verify_certificate(cert, at=at)
    except VerificationError as err:
        if not args.json:
            if saved:
                raise VerificationError(
                    f"{err.diagnostics()} (the rejected certificate was saved to "
                    f"{args.save_cert}: do not trust it)"
                ) from err
            raise
        rejected = _verify_json(None, [err.diagnostics()])
        rejected["simulation"] = trust_root is not None
        print(json.dumps(rejected, indent=2))
        return err.exit_code
    if not mrenclaves and mrsigner is None:
        # Said after success only: it is then that "verified" could be read as "our enclave".
        logging.getLogger(__name__).warning(
            "warning: no --mrenclave or --mrsigner: any genuine enclave passes; pin the "
            "measurement you expect"
        )
    if args.json:
        if result.simulation:
            print(f"mse-verify: {_SIMULATION_BANNER}", file=sys.stderr)
        print(json.dumps(_verify_json(result, []), indent=2))
    else:
        _print_verified(result)
    return 0


def _verify_json(result: Any, reasons: list[str]) -> dict[str, Any]:
    def hexed(value: Any) -> Any:
        return value.hex() if isinstance(value, bytes) else value

    fields = (
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "report_data",
        "tcb_status",
        "advisory_ids",
        "simulation",
        "checks",
    )
    out: dict[str, Any] = {"verified": result is not None, "reasons": reasons}
    for name in fields:
        value = getattr(result, name, None) if result is not None else None
        if isinstance(value, (tuple, list, frozenset, set)):
            value = [hexed(v) for v in value]
        out[name] = hexed(value)
    if result is None:
        out["advisory_ids"] = []
        out["checks"] = []
    return out


_SIMULATION_BANNER = "SIMULATION — NOT a real SGX enclave: signed by a local simulation CA"


def _print_verified(result: Any) -> None:
    if result.simulation:
        print(f"*** {_SIMULATION_BANNER} ***")
    print("verified: the quote is genuine and matches the policy")
    simulated = " (simulated)" if result.simulation else ""
    print(f"  MRENCLAVE   {result.mrenclave.hex()}{simulated}")
    print(f"  MRSIGNER    {result.mrsigner.hex()}")
    print(f"  ISV prod id {result.isv_prod_id}, ISV SVN {result.isv_svn}")
    advisories = ", ".join(result.advisory_ids) or "none"
    print(f"  TCB status  {result.tcb_status} (advisories: {advisories})")
    print(f"  report data {result.report_data.hex()}")


def verify_main(argv: Sequence[str] | None = None) -> int:
    args = _verify_parser().parse_args(argv)
    return _guard("mse-verify", _verify, args)
