"""``mse-run``: unpack, measure, sign and start an enclave (or only print its measurement)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mse_base._cli import deployment, guard

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Mode, RunRequest, WorkdirLock, WorkdirSource


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from mse_base import __version__
        from mse_base._internal.enclave.manifest import GramineLayout

        layout = GramineLayout.detect()
        gramine = "not installed" if layout is None else layout.version
        print(f"mse-base {__version__}")
        print(f"Gramine: {gramine}")
        print(f"Python: {platform.python_version()}")
        parser.exit()


def _run_parser() -> argparse.ArgumentParser:
    from mse_base._internal.enclave.deployment import DEFAULT_BIND, LOCAL_BIND
    from mse_base._internal.enclave.manifest import OPTIONAL_PARTS

    parser = argparse.ArgumentParser(
        prog="mse-run",
        description="Unpack an app, measure and sign its enclave, serve it over RA-TLS.",
    )
    parser.add_argument("--version", action=_VersionAction)
    # Every option that changes MRENCLAVE says "(measured)" (tests/pipeline/test_measured.py
    # derives that set from the pipeline and checks it, and the README's list, against these).
    parser.add_argument(
        "--size", required=True, help="enclave size, a power of two: 512M, 8G (measured)"
    )
    parser.add_argument(
        "--code", required=True, type=Path, help="tar (or .tar.gz) of the app (measured)"
    )
    parser.add_argument(
        "--host", required=True, help="name or IP clients use, the certificate's SAN (measured)"
    )
    parser.add_argument(
        "--application", required=True, help="module:attribute, e.g. app:app (measured)"
    )
    parser.add_argument("--uuid", required=True, help="deployment UUID (measured)")
    certificate = parser.add_mutually_exclusive_group(required=True)
    certificate.add_argument(
        "--self-signed", metavar="EPOCH", help="RA-TLS certificate expiry, Unix time (measured)"
    )
    certificate.add_argument(
        "--certificate",
        type=Path,
        metavar="PEM",
        help="serve the app with this CA-issued chain, leaf first; its key is provisioned, so it "
        "needs --provision (measured)",
    )
    parser.add_argument(
        "--port",
        default="443",
        help="TCP port to serve on, default 443 (not measured: the host chooses it)",
    )
    parser.add_argument(
        "--bind",
        help=f"address to bind: default {LOCAL_BIND} with --simulation or --direct, else "
        f"{DEFAULT_BIND} (not measured: the host chooses it)",
    )
    parser.add_argument("--workdir", type=Path, help="work directory (default: per deployment)")
    parser.add_argument(
        "--signer-key", type=Path, help="RSA-3072 e=3 enclave signing key (gives MRSIGNER)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the measurement and stop")
    parser.add_argument("--memory", action="store_true", help="print the memory budget")
    parser.add_argument(
        "--debug", action="store_true", help="debug enclave, logs, tracebacks (measured)"
    )
    parser.add_argument("--force", action="store_true", help="reuse a non-empty work directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--simulation", action="store_true", help="run without SGX: simulated quote and measure"
    )
    mode.add_argument(
        "--direct",
        action="store_true",
        help="run the SGX manifest under gramine-direct (no SGX): real measurement, "
        "simulated quote, no hardware isolation",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="NAME",
        help="trust a part of Python left out by default, repeatable: "
        f"{', '.join(sorted(OPTIONAL_PARTS))} (measured)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--provision",
        metavar="MODE",
        help="push: serve only a provisioning endpoint until mse-secrets push; pull: fetch "
        "from --secrets-server at start; sealed: restart a push or pull deployment from what it "
        "sealed, with no network, measured as that one (measured)",
    )
    parser.add_argument(
        "--secrets-server", metavar="URL", help="https://HOST:PORT of mse-secrets serve (measured)"
    )
    parser.add_argument(
        "--secrets-server-ca", type=Path, metavar="PEM", help="CA of that server (measured)"
    )
    parser.add_argument(
        "--provision-timeout",
        metavar="SECONDS",
        help="give up when nothing is provisioned within this time, default 600 (measured)",
    )
    parser.add_argument(
        "--subject",
        metavar="DN",
        help="the certificate's subject, RFC 4514: CN=app.example.com,O=Example Corp; "
        "default CN=HOST (measured)",
    )
    parser.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP for the certificate, after --host; repeatable (measured)",
    )
    return parser


def _read_pem(option: str, path: Path) -> bytes:
    from mse_base._cli.verifier_options import read_input
    from mse_base._internal.enclave.deployment import MAX_CERTIFICATE_CHAIN

    return read_input(path, option, MAX_CERTIFICATE_CHAIN, "give a PEM file", stdin=False)


def _secrets_server_ca(path: Path | None) -> str | None:
    from mse_base._internal.enclave.deployment import parse_secrets_server_ca

    if path is None:
        return None
    return parse_secrets_server_ca(_read_pem("--secrets-server-ca", path), str(path))


def _certificate(args: argparse.Namespace) -> None:
    """``--certificate``: its canonical chain is measured, and its expiry is the RA-TLS one's."""
    from mse_base._internal.enclave.deployment import parse_certificate, parse_host

    args.certificate_pem = None
    if args.certificate is None:
        return
    pem, expiry = parse_certificate(
        _read_pem("--certificate", args.certificate), str(args.certificate), parse_host(args.host)
    )
    args.certificate_pem = pem
    # The RA-TLS certificate (provisioning only, then) lives as long as the one it makes way for.
    args.self_signed = str(int(expiry.timestamp()))


def _provision(args: argparse.Namespace) -> bool:
    """Whether this run restarts from sealed state; ``args.provision`` becomes the measured mode."""
    from mse_base._internal.enclave.deployment import RUN_PROVISION_MODES, parse_provision

    if parse_provision(args.provision, RUN_PROVISION_MODES) != "sealed":
        return False
    # The deployment's own argv, so its own MRENCLAVE: the one key that unseals what it sealed.
    args.provision = "pull" if args.secrets_server is not None else "push"
    return True


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


def _lock_workdir(args: argparse.Namespace) -> WorkdirLock | None:
    """The first thing mse-run does: hold its work directory, cleaning up after a crash there.

    A dry run without --workdir has a new temporary one, locked when made.
    """
    from mse_base._internal.enclave import pipeline
    from mse_base._internal.enclave.deployment import parse_uuid

    source: WorkdirSource
    if args.workdir is not None:
        workdir, source = args.workdir, "--workdir"
    elif args.dry_run:
        return None
    else:
        workdir, source = _default_workdir(str(parse_uuid(args.uuid)))
    return pipeline.lock_workdir(workdir, pipeline.workdir_name(workdir, source))


def run_request(args: argparse.Namespace, temporary: Path | None = None) -> RunRequest:
    """mse-run's options as the pipeline's request, in the work directory given, else in
    ``temporary`` (a dry run's), else in the default one."""
    from mse_base._internal.enclave import pipeline
    from mse_base._internal.enclave.deployment import DEFAULT_BIND, LOCAL_BIND
    from mse_base._internal.enclave.manifest import check_included
    from mse_base._internal.enclave.size import parse_enclave_size
    from mse_base._internal.provision.codefile import is_encrypted

    # An encrypted tar (mse-secrets encrypt-code) is told by its header; the bootstrap is told
    # by its measured argv.
    args.encrypted_code = is_encrypted(args.code)
    args.secrets_server_ca_pem = _secrets_server_ca(args.secrets_server_ca)
    restart_sealed = _provision(args)
    _certificate(args)
    mode: Mode = "simulation" if args.simulation else "direct" if args.direct else "sgx"
    if args.bind is None:
        # Unmeasured, so the default may follow the mode without changing MRENCLAVE.
        args.bind = DEFAULT_BIND if mode == "sgx" else LOCAL_BIND
    deployment_ = deployment(args)
    workdir: Path
    source: WorkdirSource
    if args.workdir is not None:
        workdir, source = args.workdir, "--workdir"
    elif temporary is not None:
        workdir, source = temporary, "temporary"
    else:
        workdir, source = _default_workdir(str(deployment_.deployment_id))
    return pipeline.RunRequest(
        deployment=deployment_,
        enclave_size=parse_enclave_size(args.size),
        code=args.code,
        workdir=workdir,
        signer_key=args.signer_key,
        dry_run=args.dry_run,
        force=args.force,
        mode=mode,
        workdir_source=source,
        include=check_included(args.include),
        restart_sealed=restart_sealed,
    )


def _run(args: argparse.Namespace) -> int:
    from mse_base._internal.enclave import supervise

    lock = _lock_workdir(args)
    if args.workdir is None and args.dry_run:
        # A dry run only prints the measurement: its files go to a directory removed afterwards,
        # so it leaves nothing that would make the real run's default work directory "not empty".
        with _temporary_directory() as workdir:
            return _run_request(args, run_request(args, workdir), None)
    request = run_request(args)
    if request.mode != "sgx" and not args.dry_run:
        # Before anything is written; the certificate check after the start still decides.
        supervise.check_port_free(request.deployment.bind, request.deployment.port)
    return _run_request(args, request, lock)


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


def _run_request(args: argparse.Namespace, request: RunRequest, lock: WorkdirLock | None) -> int:
    from mse_base._internal.enclave import pipeline, supervise
    from mse_base._internal.enclave.manifest import ENCLAVE_SECRETS_DIR
    from mse_base._internal.enclave.pipeline import SEALING_ROOT_KEY_NAME
    from mse_base._internal.enclave.size import format_size

    prepared = pipeline.prepare(request, None if args.json else _progress(), lock)
    summary = prepared.summary()
    left = prepared.request.enclave_size - prepared.trusted_bytes
    summary["memory_left_bytes"] = left
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        # Only the simulated MRENCLAVE is tagged: --direct's is the real one, and MRSIGNER is
        # the signing key's hash in every mode.
        tag = " (simulated)" if prepared.simulated else ""
        print(f"MRENCLAVE: {summary['mrenclave']}{tag}")
        print(f"MRSIGNER: {summary['mrsigner']}", flush=True)
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
    if prepared.request.mode == "direct":
        logging.getLogger("mse").warning(
            "DIRECT: Gramine LibOS without SGX: no hardware isolation; the quote is simulated"
        )
    if prepared.request.mode != "simulation" and not args.dry_run:
        _warn_hosts_only_server(prepared.request.deployment.secrets_server)
    if prepared.owner_tools:
        _warn_owner_tools(prepared.owner_tools)
    if prepared.request.mode != "sgx" and not args.dry_run:
        logging.getLogger("mse").warning(
            "%s: sealed secrets (%s) use a stand-in for the CPU's key, derived from MRENCLAVE "
            "and %s: whoever reads that file can unseal them",
            prepared.request.mode.upper(),
            ENCLAVE_SECRETS_DIR,
            prepared.request.workdir / SEALING_ROOT_KEY_NAME,
        )
    if args.dry_run:
        return 0
    if prepared.request.mode == "sgx":
        return pipeline.launch_sgx(prepared)
    if prepared.request.mode == "direct":
        return supervise.run_direct(prepared)
    return supervise.run_simulation(prepared)


def _warn_hosts_only_server(server: str | None) -> None:
    """A secrets server named in this host's /etc/hosts, which Gramine's enclave does not read.

    A warning, not a refusal: DNS may know the name too, and mse-run cannot tell.
    """
    from urllib.parse import urlsplit

    from mse_base._internal.enclave.manifest import only_in_host_files

    name = urlsplit(server).hostname if server else None
    if name and only_in_host_files(name):
        logging.getLogger("mse").warning(
            "--secrets-server %s: %s is in this host's /etc/hosts, which the enclave does not "
            "read (inside Gramine only localhost and DNS names resolve): unless DNS knows it, "
            "give its IP address (the URL is measured: MRENCLAVE changes)",
            server,
            name,
        )


def _warn_owner_tools(tools: Sequence[str]) -> None:
    """The owner's or test tools are measured with the app: a warning, since only the app's
    owner knows the app does not use them after all."""
    from mse_base._internal.extras import extras_of, install_command

    logging.getLogger("mse").warning(
        "warning: the environment the enclave measures (%s) holds %s: owner or test tools that "
        "no requirement of the app needs, measured into MRENCLAVE all the same; keep them in "
        "another environment (%s) and uninstall them here, or list them in the app's "
        "requirements.txt if it uses them",
        sys.prefix,
        ", ".join(tools),
        install_command(extras_of(tools)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _run_parser().parse_args(argv)
    return guard("mse-run", _run, args)
