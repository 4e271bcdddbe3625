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


def _read_input(path: Path, what: str, limit: int, hint: str, *, stdin: bool = True) -> bytes:
    """A local input, ``-`` being standard input when ``stdin``; bounded while read.

    So ``/dev/zero`` or an endless pipe ends in one error line instead of a hang. Pipes are
    accepted (``<(...)``); devices and terminals are not.
    """
    from mse_base._internal.files import InputRefused, read_descriptor, read_limited
    from mse_base.errors import UsageError

    from_stdin = str(path) == "-"
    if from_stdin and not stdin:
        raise UsageError(f"{what} -: standard input is not accepted here; {hint}")
    try:
        if from_stdin:
            return read_descriptor(0, limit, pipes=True)
        return read_limited(path, limit, pipes=True)
    except InputRefused as err:
        shown = "- (standard input)" if from_stdin else str(path)
        raise UsageError(f"{what} {shown} {err}; {hint}") from None


def _quote_input(path: Path) -> bytes:
    from mse_base._internal.dcap.quote import MAX_QUOTE_SIZE

    return _read_input(
        path,
        "--quote",
        MAX_QUOTE_SIZE,
        "pass a raw SGX quote as a file, a pipe or - for standard input",
    )


def _cert_input(path: Path) -> bytes:
    from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE

    return _read_input(
        path,
        "--cert",
        MAX_CERTIFICATE_SIZE,
        "pass an RA-TLS certificate (PEM or DER) as a file, a pipe or - for standard input",
    )


def _simulation_ca_input(path: Path) -> bytes:
    from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE
    from mse_base._internal.simulation.pki import simulation_dir

    return _read_input(
        path,
        "--simulation-ca",
        MAX_CERTIFICATE_SIZE,
        f"pass the ca.pem of the simulation ({simulation_dir() / 'ca.pem'})",
        # The simulation's collateral is looked up beside the file.
        stdin=False,
    )


def _simulation_ca(path: Path) -> Any:
    """The ``--simulation-ca`` certificate, checked as a trust root before anything uses it."""
    from cryptography import x509

    from mse_base._internal.dcap import chain
    from mse_base._internal.simulation.pki import simulation_dir
    from mse_base.errors import UsageError

    fix = f"pass the ca.pem of the simulation ({simulation_dir() / 'ca.pem'})"
    try:
        root = x509.load_pem_x509_certificate(_simulation_ca_input(path))
    except ValueError:
        raise UsageError(f"--simulation-ca {path}: not a PEM certificate; {fix}") from None
    try:
        chain.check_trust_root(root)
    except UsageError as err:
        raise UsageError(f"--simulation-ca {path}: {err}; {fix}") from None
    if chain.spki_sha256(root) == chain.INTEL_SGX_ROOT_SPKI_SHA256:
        raise UsageError(
            f"--simulation-ca {path}: this is the Intel SGX Root CA, which verifies real quotes; "
            "drop --simulation-ca"
        )
    return root


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
    from mse_base._internal.simulation.pki import refresh_collateral, simulation_dir
    from mse_base.errors import EnvironmentMissing, UsageError

    try:
        refresh_collateral(ca_pem.parent)
    except EnvironmentMissing as err:
        # Its keys are readable but damaged: the PKI cannot re-issue its collateral (exit 3).
        raise EnvironmentMissing(f"--simulation-ca {ca_pem}: {err}") from None
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
    from mse_base._internal.dcap.ratls import certificate_der

    return ssl.DER_cert_to_PEM_cert(certificate_der(presented)).encode("ascii")


def _fetch_server_certificate(url: str) -> bytes:
    """The DER certificate an RA-TLS server presents; its quote, not a CA, is the trust anchor."""
    from urllib.parse import urlsplit

    from mse_base._internal.dcap.ratls import fetch_certificate
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
    return fetch_certificate(parts.hostname, port, parts.hostname)


# The option behind each Policy field, to name it when Policy refuses a value.
_POLICY_OPTIONS = {
    "mrenclave": "--mrenclave",
    "mrsigner": "--mrsigner",
    "isv_prod_id": "--isv-prod-id",
    "min_isv_svn": "--min-isv-svn",
    "allowed_tcb_statuses": "--allow-status",
}


def _policy(args: argparse.Namespace, mrenclaves: frozenset[bytes], mrsigner: bytes | None) -> Any:
    """The Policy of the options. Policy checks every value (as for a library caller); the CLI
    only says which option a refusal is about."""
    from mse_base.errors import UsageError
    from mse_base.verify import Policy

    try:
        return Policy(
            mrenclave=mrenclaves or None,
            mrsigner=mrsigner,
            isv_prod_id=args.isv_prod_id,
            min_isv_svn=args.min_isv_svn,
            allow_debug=args.allow_debug,
            allowed_tcb_statuses=frozenset({"UpToDate", *args.allow_status}),
            allow_stale_crls=args.insecure_allow_stale_crl,
        )
    except UsageError as err:
        field, _, detail = str(err).removeprefix("policy ").partition(": ")
        values = {
            "isv_prod_id": [args.isv_prod_id],
            "min_isv_svn": [args.min_isv_svn],
            "allowed_tcb_statuses": args.allow_status,
        }.get(field, [])
        option = _POLICY_OPTIONS.get(field)
        if option is None:  # a message of another form: shown as Policy wrote it
            raise
        shown = " ".join(f"{option} {value}" for value in values) or option
        raise UsageError(f"{shown}: {detail}") from None


def _verify(args: argparse.Namespace) -> int:
    from mse_base._internal.dcap import ratls
    from mse_base._internal.dcap.collateral import Collateral, CollateralSource
    from mse_base._internal.dcap.pccs import INTEL_PCS_URL, PCCSCollateralSource
    from mse_base.errors import UsageError, VerificationError
    from mse_base.verify import PartialResult, Verifier

    if not args.debug:
        # cryptography warns about odd encodings in the certificates and CRLs it is handed
        # (the verdict is the verifier's); those warnings would print source lines around the
        # one line a user should read. Only mse-verify: an app's own warnings must stay visible.
        warnings.simplefilter("ignore")
    mrenclaves = frozenset(_hex_option("--mrenclave", v, 32) for v in args.mrenclave)
    mrsigner = _hex_option("--mrsigner", args.mrsigner, 32) if args.mrsigner else None
    policy = _policy(args, mrenclaves, mrsigner)
    at = _verification_time(args.at)
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

    trust_root = None
    if args.simulation_ca is not None:
        trust_root = _simulation_ca(args.simulation_ca)
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
                amended = VerificationError(
                    f"{err.diagnostics()} (the rejected certificate was saved to "
                    f"{args.save_cert}: do not trust it)",
                    check=err.failed_check,
                )
                amended.partial = err.partial
                raise amended from err
            raise
        # No partial: rejected before the verifier ran (the server's certificate could not be
        # fetched), so nothing was established.
        partial = err.partial or PartialResult(simulation=trust_root is not None)
        rejected = _verify_json(partial.to_json(), [err.diagnostics()], err.failed_check)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _verify_parser().parse_args(argv)
    return guard("mse-verify", _verify, args)
