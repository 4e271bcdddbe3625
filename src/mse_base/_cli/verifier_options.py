"""What a verifier is told on the command line, shared by ``mse-verify`` and ``mse-secrets``.

One set of options (what the enclave must be; where collateral and trust come from) and one way
to turn them into a :class:`mse_base.verify.Verifier`, so a secret is released under exactly the
checks ``mse-verify`` reports.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

    from mse_base.errors import VerificationError
    from mse_base.verify import Policy, VerificationResult, Verifier

#: Above every result checked against a simulation CA, whatever it measured.
SIMULATION_BANNER = "SIMULATION — NOT a real SGX enclave: signed by a local simulation CA"


def add_verifier_options(parser: argparse.ArgumentParser) -> None:
    add_policy_options(parser)
    add_trust_options(parser)


def add_policy_options(parser: argparse.ArgumentParser) -> None:
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


def add_trust_options(parser: argparse.ArgumentParser, *, fixed_time: bool = True) -> None:
    """The trust options; without ``fixed_time`` the command verifies only at the present and
    ``--at`` is parsed but not listed, so that the command can refuse it in one line."""
    trust = parser.add_argument_group("collateral and trust")
    collateral = trust.add_mutually_exclusive_group()
    collateral.add_argument("--collateral", type=Path, metavar="DIR")
    collateral.add_argument("--pccs-url", metavar="URL", help="Intel PCS or PCCS base URL")
    trust.add_argument(
        "--at",
        metavar="ISO-8601",
        help="verification time (default: now)" if fixed_time else argparse.SUPPRESS,
    )
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


@dataclass(frozen=True)
class PolicyOptions:
    """The checked policy options: no file or network was touched to get them."""

    policy: Policy
    at: datetime | None
    # The owner's word that the key behind the policy's MRSIGNER never reaches a host.
    trust_signer_key_holder: bool = False

    @property
    def pinned(self) -> bool:
        return bool(self.policy.mrenclave) or self.policy.mrsigner is not None

    def require_identity(self, pin: str, opt_in: str) -> None:
        """Refuse a policy that would release secrets to an enclave the host could have made.

        MRENCLAVE names the code; MRSIGNER names whoever holds the signing key, and ``mse-run``
        signs on the machine that launches the enclave (the mounted key, or a throwaway one made
        there). So with MRSIGNER alone the host signs an enclave of its own and passes. Only
        the owner can say that the key never reaches a host: ``opt_in`` (the option or policy
        key that says so, named after what it trusts) is that statement. ``pin`` names how to
        give MRENCLAVE where this policy comes from.
        """
        from mse_base.errors import UsageError

        if self.policy.mrenclave:
            return
        if self.policy.mrsigner is None:
            raise UsageError(
                f"{pin} is required: secrets are never sent to any genuine enclave, only to the "
                "one you expect (mse-run --dry-run prints its MRENCLAVE)"
            )
        if not self.trust_signer_key_holder:
            raise UsageError(
                f"MRSIGNER without MRENCLAVE: MRSIGNER only names who holds the signing key, and "
                f"mse-run signs on the host that runs the enclave, so that host can sign code of "
                f"its own and pass; pin {pin} (mse-run --dry-run prints it), or, only if that key "
                f"never reaches any host, say so with {opt_in} (docs/secrets.md, 'Who holds "
                f"which key': signing releases on the owner's machine is yet to come)"
            )


def hex_option(name: str, value: str, size: int) -> bytes:
    from mse_base.errors import UsageError

    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise UsageError(f"{name} {value!r} must be {size} bytes of hex ({2 * size} digits)")
    return raw


def verification_time(text: str | None) -> datetime | None:
    from datetime import timezone

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


def read_input(path: Path, what: str, limit: int, hint: str, *, stdin: bool = True) -> bytes:
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


# The option behind each Policy field, to name it when Policy refuses a value.
_POLICY_OPTIONS = {
    "mrenclave": "--mrenclave",
    "mrsigner": "--mrsigner",
    "isv_prod_id": "--isv-prod-id",
    "min_isv_svn": "--min-isv-svn",
    "allowed_tcb_statuses": "--allow-status",
}


def policy_options(args: argparse.Namespace) -> PolicyOptions:
    """The Policy of the options. Policy checks every value (as for a library caller); this only
    says which option a refusal is about."""
    from mse_base.errors import UsageError
    from mse_base.verify import Policy

    mrenclaves = frozenset(hex_option("--mrenclave", v, 32) for v in args.mrenclave)
    mrsigner = hex_option("--mrsigner", args.mrsigner, 32) if args.mrsigner else None
    try:
        policy = Policy(
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
    trust_signer = bool(getattr(args, "trust_signer_key_holder", False))
    if trust_signer and mrsigner is None:
        raise UsageError(
            "--trust-signer-key-holder trusts the holder of the key behind --mrsigner: give "
            "--mrsigner HEX too"
        )
    return PolicyOptions(policy, verification_time(args.at), trust_signer)


_MAX_POLICY = 64 * 1024
# policy.toml key -> (the option it stands for, its type, its default).
_POLICY_KEYS: dict[str, tuple[str, type, object]] = {
    "mrenclave": ("mrenclave", list, []),
    "mrsigner": ("mrsigner", str, None),
    "isv_prod_id": ("isv_prod_id", int, None),
    "min_isv_svn": ("min_isv_svn", int, None),
    "allow_status": ("allow_status", list, []),
    "allow_debug": ("allow_debug", bool, False),
    "trust_signer_key_holder": ("trust_signer_key_holder", bool, False),
}


def policy_from_file(path: Path, args: argparse.Namespace) -> PolicyOptions:
    """The policy in a TOML file, with the keys named like mse-verify's options, e.g.::

        mrenclave = ["<64 hex>", "<64 hex>"]
        allow_status = ["SWHardeningNeeded"]
        allow_debug = false                     # isv_prod_id, min_isv_svn also
        # mrsigner = "<64 hex>" without mrenclave needs trust_signer_key_holder = true

    checked exactly as those options are (``args`` gives ``--at`` and the CRL option).
    """
    import tomllib

    from mse_base.errors import UsageError

    raw = read_input(path, "--policy", _MAX_POLICY, "pass a TOML policy file", stdin=False)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"--policy {path}: not TOML ({err})") from None
    unknown = sorted(set(data) - set(_POLICY_KEYS))
    if unknown:
        raise UsageError(
            f"--policy {path}: unknown key(s) {', '.join(unknown)}; the keys are "
            f"{', '.join(_POLICY_KEYS)}"
        )
    values = vars(args).copy()
    for key, (name, kind, default) in _POLICY_KEYS.items():
        value = data.get(key, default)
        if key == "mrenclave" and isinstance(value, str):
            value = [value]
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise UsageError(f"--policy {path}: {key} must be a {kind.__name__}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise UsageError(f"--policy {path}: {key} must be a list of strings")
        values[name] = value
    try:
        return policy_options(argparse.Namespace(**values))
    except UsageError as err:
        raise UsageError(f"--policy {path}: {err}") from None


def simulation_collateral_dir(ca_pem: Path) -> Path:
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


def _trust_root(args: argparse.Namespace) -> x509.Certificate | None:
    """The ``--simulation-ca`` certificate, checked as a trust root before anything uses it."""
    from cryptography import x509

    from mse_base._internal.dcap import chain
    from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE
    from mse_base._internal.simulation.pki import simulation_dir
    from mse_base.errors import UsageError

    path = args.simulation_ca
    if path is None:
        return None
    fix = f"pass the ca.pem of the simulation ({simulation_dir() / 'ca.pem'})"
    if path.absolute() == simulation_dir() / "ca.pem" and not path.exists():
        # This machine's own simulation CA, not made yet: a server may start before any enclave.
        fix = (
            "create it with `mse-secrets simulation-ca` (mse-run --simulation and --direct also "
            "make it on first use)"
        )
    # Not standard input: the simulation's collateral is looked up beside the file.
    pem = read_input(path, "--simulation-ca", MAX_CERTIFICATE_SIZE, fix, stdin=False)
    try:
        root = x509.load_pem_x509_certificate(pem)
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


def build_verifier(args: argparse.Namespace, options: PolicyOptions) -> Verifier:
    """The verifier the options describe (reads the trust root and local collateral)."""
    from mse_base._internal.dcap.collateral import Collateral, CollateralSource
    from mse_base._internal.dcap.pccs import INTEL_PCS_URL, PCCSCollateralSource
    from mse_base.errors import UsageError
    from mse_base.verify import Verifier

    trust_root = _trust_root(args)
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
        collateral = Collateral.from_directory(simulation_collateral_dir(args.simulation_ca))
    else:
        collateral = PCCSCollateralSource(INTEL_PCS_URL)
    if args.insecure_allow_stale_crl:
        logging.getLogger(__name__).warning(
            "warning: --insecure-allow-stale-crl: CRLs past their nextUpdate are accepted, so a "
            "recent revocation may go unseen"
        )
    return Verifier(
        collateral=collateral,
        policy=options.policy,
        trust_root=trust_root,
        simulation=trust_root is not None,
    )


def https_address(url: str) -> tuple[str, int]:
    """HOST and PORT of an ``https://HOST[:PORT]`` URL (a bare HOST[:PORT] is taken as https)."""
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
    return parts.hostname, port


def mrenclave_label(result: VerificationResult) -> str:
    """What follows MRENCLAVE on a verified enclave's line: "(simulated)" only for the simulated
    measurement of ``mse-run --simulation``; ``--direct``'s is the real one, on no SGX."""
    if result.measurement == "simulated":
        return " (simulated)"
    if result.simulation:
        return " (real measurement, Gramine without SGX)"
    return ""


def explain_rejection(err: VerificationError, args: argparse.Namespace) -> VerificationError:
    """``err``, saying how to check the quote when it is a simulation quote shown to a verifier
    that does not trust its CA (the one rejection whose fix is an option of this command).

    Only the message changes: the quote stays rejected.
    """
    from mse_base._internal.dcap import chain
    from mse_base._internal.simulation.pki import simulation_dir
    from mse_base.errors import VerificationError

    partial = err.partial
    if err.failed_check != "pck.chain" or partial is None or partial.quote is None:
        return err
    root = chain.chain_root(partial.quote.pck_chain_pem)
    if root is None or not chain.is_simulation_certificate(root):
        return err
    trusted = _trust_root(args) or chain.intel_sgx_root()
    if chain.spki_sha256(root) == chain.spki_sha256(trusted):
        return err  # its own CA is trusted: the chain failed for another reason
    default = simulation_dir() / "ca.pem"
    if args.simulation_ca is None:
        hint = (
            f"to check this simulation quote, pass --simulation-ca {default} (the ca.pem of the "
            "simulation that made it; that is where mse-run keeps it)"
        )
    else:
        hint = (
            f"--simulation-ca {args.simulation_ca} is another simulation's CA: pass the ca.pem "
            f"of the simulation that made this quote (mse-run keeps it in {default})"
        )
    explained = VerificationError(f"{err.diagnostics()}; {hint}", check=err.failed_check)
    explained.partial = partial
    return explained
