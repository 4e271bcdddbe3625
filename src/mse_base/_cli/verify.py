"""``mse-verify``: check an RA-TLS server, an RA-TLS certificate or a raw quote."""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mse_base._cli import guard
from mse_base._cli.verifier_options import (
    SIMULATION_BANNER,
    add_verifier_options,
    build_verifier,
    explain_rejection,
    https_address,
    mrenclave_label,
    policy_options,
    read_input,
)

_VERIFY_EPILOG = """\
exit status: 0 verified, 1 rejected (the reason on stderr, or in the JSON), 2 usage error,
3 mse-verify cannot run here (a damaged installation, or a simulation PKI beside
--simulation-ca that cannot re-issue its collateral).
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
    source.add_argument(
        "--cert", type=Path, metavar="FILE", help="RA-TLS certificate (PEM/DER); - for stdin"
    )
    source.add_argument("--quote", type=Path, metavar="FILE", help="raw SGX quote; - for stdin")
    add_verifier_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--save-cert",
        type=Path,
        metavar="PATH",
        help="write the presented certificate as PEM to this new file",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return parser


def _quote_input(path: Path) -> bytes:
    from mse_base._internal.dcap.quote import MAX_QUOTE_SIZE

    return read_input(
        path,
        "--quote",
        MAX_QUOTE_SIZE,
        "pass a raw SGX quote as a file, a pipe or - for standard input",
    )


def _cert_input(path: Path) -> bytes:
    from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE

    return read_input(
        path,
        "--cert",
        MAX_CERTIFICATE_SIZE,
        "pass an RA-TLS certificate (PEM or DER) as a file, a pipe or - for standard input",
    )


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


def _presented_pem(presented: bytes) -> bytes:
    """The certificate exactly as presented, as PEM: its DER is never re-encoded.

    (A parsed certificate may have been normalised on loading, e.g. Gramine's mbedTLS ones; a
    re-encoded copy would be neither byte-exact evidence nor usable with curl --cacert.)
    """
    from mse_base._internal.dcap.ratls import certificate_der

    return ssl.DER_cert_to_PEM_cert(certificate_der(presented)).encode("ascii")


def _fetch_server_certificate(url: str) -> bytes:
    """The DER certificate an RA-TLS server presents; its quote, not a CA, is the trust anchor."""
    from mse_base._internal.dcap.ratls import fetch_certificate

    host, port = https_address(url)
    return fetch_certificate(host, port, host)


def _verify(args: argparse.Namespace) -> int:
    from mse_base._internal.dcap import ratls
    from mse_base.errors import UsageError, VerificationError
    from mse_base.verify import PartialResult

    if not args.debug:
        # cryptography warns about odd encodings in the certificates and CRLs it is handed
        # (the verdict is the verifier's); those warnings would print source lines around the
        # one line a user should read. Only mse-verify: an app's own warnings must stay visible.
        warnings.simplefilter("ignore")
    options = policy_options(args)
    at = options.at
    # Local inputs are read first: a typo in a path is reported before any network access.
    quote_bytes = _quote_input(args.quote) if args.quote is not None else None
    cert_bytes = _cert_input(args.cert) if args.cert is not None else None
    if args.save_cert is not None:
        if args.quote is not None:
            raise UsageError(
                "--save-cert needs a certificate: use it with an https:// URL or --cert, "
                "not --quote"
            )
        _check_save_target(args.save_cert)
    verifier = build_verifier(args, options)
    simulation = args.simulation_ca is not None
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
    except VerificationError as raised:
        err = explain_rejection(raised, args)
        if not args.json:
            if saved:
                amended = VerificationError(
                    f"{err.diagnostics()} (the rejected certificate was saved to "
                    f"{args.save_cert}: do not trust it)",
                    check=err.failed_check,
                )
                amended.partial = err.partial
                raise amended from raised
            if err is raised:
                raise
            raise err from raised
        # No partial: rejected before the verifier ran (the server's certificate could not be
        # fetched), so nothing was established.
        partial = err.partial or PartialResult(simulation=simulation)
        rejected = _verify_json(partial.to_json(), [err.diagnostics()], err.failed_check)
        print(json.dumps(rejected, indent=2))
        return err.exit_code
    if not options.pinned:
        # Said after success only: it is then that "verified" could be read as "our enclave".
        logging.getLogger(__name__).warning(
            "warning: no --mrenclave or --mrsigner: any genuine enclave passes; pin the "
            "measurement you expect"
        )
    elif not options.policy.mrenclave:
        logging.getLogger(__name__).warning(
            "warning: --mrsigner without --mrenclave: this proves who holds the signing key, "
            "not which code runs; mse-run signs on the host, so pin --mrenclave unless the key "
            "never reaches a host"
        )
    if args.json:
        if result.simulation:
            print(f"mse-verify: {SIMULATION_BANNER}", file=sys.stderr)
        print(json.dumps(_verify_json(result.to_json(), [], None), indent=2))
    else:
        _print_verified(result)
    return 0


def _verify_json(
    findings: dict[str, Any], reasons: list[str], failed_check: str | None
) -> dict[str, Any]:
    """One object for either verdict: the CLI's own keys, then the library's ``to_json()`` of
    the result or of the rejection's partial (the README's JSON fields, in its order)."""
    return {
        "verified": not reasons,
        "failed_check": failed_check if reasons else None,
        "reasons": reasons,
        **findings,
    }


def _print_verified(result: Any) -> None:
    if result.simulation:
        print(f"*** {SIMULATION_BANNER} ***")
    print("verified: the quote is genuine and matches the policy")
    print(f"  MRENCLAVE   {result.mrenclave.hex()}{mrenclave_label(result)}")
    print(f"  MRSIGNER    {result.mrsigner.hex()}")
    print(f"  ISV prod id {result.isv_prod_id}, ISV SVN {result.isv_svn}")
    advisories = ", ".join(result.advisory_ids) or "none"
    print(f"  TCB status  {result.tcb_status} (advisories: {advisories})")
    print(f"  report data {result.report_data.hex()}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _verify_parser().parse_args(argv)
    return guard("mse-verify", _verify, args)
