"""``mse-secrets``: hand an attested enclave what only it may see.

``push`` verifies the enclave exactly as ``mse-verify`` does (the same options, the same
verifier) and sends the secrets and code key over the TLS connection it verified. ``serve`` is the
pull side: it releases them to every enclave whose client certificate passes the same verifier
under a policy file. ``encrypt-code`` seals a code tar so that only an enclave given its key can
run it. ``dev-ca`` and ``simulation-ca`` make what a trial needs: a throwaway CA with the server
and app certificates, and the simulation CA (before any enclave runs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mse_base._cli import guard
from mse_base._cli.verifier_options import (
    SIMULATION_BANNER,
    PolicyOptions,
    add_trust_options,
    add_verifier_options,
    build_verifier,
    explain_rejection,
    https_address,
    mrenclave_label,
    policy_from_file,
    policy_options,
    read_input,
)

if TYPE_CHECKING:
    from mse_base._internal.provision.protocol import Payload

_PUSH_EPILOG = """\
exit status: 0 provisioned, 1 the enclave was rejected (nothing was sent) or refused the push,
2 usage error. The secrets file is a JSON object of name: value; the app reads the values with
mse_base.secrets.get(name) or from the file named by $MSE_SECRETS."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mse-secrets",
        description="Provision secrets and code keys to attested enclaves; encrypt code.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    push = commands.add_parser(
        "push",
        help="verify an enclave started with --provision push, then send it its secrets",
        description="Verify an RA-TLS enclave, then send it secrets over that same connection.",
        epilog=_PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("url", help="https://HOST:PORT of the waiting enclave")
    push.add_argument("--uuid", required=True, help="the deployment UUID given to mse-run")
    push.add_argument(
        "--secrets", type=Path, metavar="FILE", help="JSON object of name: value; - for stdin"
    )
    push.add_argument(
        "--code-key", type=Path, metavar="FILE", help="key from mse-secrets encrypt-code"
    )
    _add_provisioned_options(push)
    add_verifier_options(push)
    push.add_argument(
        "--trust-signer-key-holder",
        action="store_true",
        help="with --mrsigner and no --mrenclave: send to any enclave signed with that key. "
        "Only if the key never reaches a host: mse-run signs where it runs, so a host holding "
        "the key can sign code of its own",
    )
    push.add_argument("--debug", action="store_true", help="tracebacks on errors")
    serve = commands.add_parser(
        "serve",
        help="release secrets to enclaves started with --provision pull that pass a policy",
        description="Serve GET /mse/secrets over HTTPS to RA-TLS clients that pass the policy.",
    )
    serve.add_argument("--policy", type=Path, required=True, metavar="TOML", help="policy file")
    serve.add_argument("--secrets", type=Path, metavar="FILE", help="JSON object of name: value")
    serve.add_argument("--code-key", type=Path, metavar="FILE", help="key of encrypted code")
    _add_provisioned_options(serve)
    serve.add_argument("--cert", type=Path, required=True, metavar="PEM", help="server chain")
    serve.add_argument("--key", type=Path, required=True, metavar="PEM", help="server key")
    serve.add_argument(
        "--bind", help="address (default 127.0.0.1 with --simulation-ca, else 0.0.0.0)"
    )
    serve.add_argument("--port", default="8443", help="port (default 8443)")
    add_trust_options(serve, fixed_time=False)
    serve.add_argument("--debug", action="store_true", help="tracebacks on errors")
    encrypt = commands.add_parser(
        "encrypt-code",
        help="encrypt a code tar for mse-run --code (AES-256-GCM)",
        description="Encrypt a code tar; only an enclave pushed the key can run it.",
    )
    encrypt.add_argument("tar", type=Path, help="the app's tar, as mse-run --code takes it")
    encrypt.add_argument(
        "--key-out", type=Path, required=True, metavar="FILE", help="new key file (0600)"
    )
    encrypt.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="encrypted file"
    )
    encrypt.add_argument("--debug", action="store_true", help="tracebacks on errors")
    _add_trial_commands(commands)
    return parser


_DEV_CA_EPILOG = """\
For trials only: every certificate's subject says so, the CA expires soon and its key is not
kept. Writes DIR/ca.pem, DIR/server.pem + server.key (mse-secrets serve --cert/--key) and
DIR/app-fullchain.pem + app.key (mse-run --certificate, mse-secrets push|serve --tls-key);
refuses a DIR that already holds any of them."""


def _add_trial_commands(commands: Any) -> None:
    # The defaults are devca's (DEFAULT_NAMES, DEFAULT_DAYS, MAX_DAYS), written out here so that
    # building the parser does not import cryptography's x509.
    dev_ca = commands.add_parser(
        "dev-ca",
        help="make a throwaway CA and the server and app certificates a trial needs",
        description="Make a throwaway CA (for trials only) and the certificates it issues.",
        epilog=_DEV_CA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev_ca.add_argument("directory", type=Path, metavar="DIR", help="where to write (new files)")
    dev_ca.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="HOST",
        help="DNS name or IP address the certificates name; repeatable (default: localhost "
        "and 127.0.0.1)",
    )
    dev_ca.add_argument(
        "--days",
        type=int,
        metavar="N",
        help="lifetime of the CA and its certificates (default 30, at most 365)",
    )
    dev_ca.add_argument("--debug", action="store_true", help="tracebacks on errors")
    simulation_ca = commands.add_parser(
        "simulation-ca",
        help="create the simulation CA if missing and print its ca.pem path (NOT SGX)",
        description="Create the simulation PKI that mse-run --simulation and --direct sign with "
        "(if missing) and print the path of its ca.pem, for --simulation-ca.",
    )
    simulation_ca.add_argument("--debug", action="store_true", help="tracebacks on errors")


def _add_provisioned_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sealed-secrets",
        type=Path,
        metavar="FILE",
        help="JSON object of name: value the enclave also seals, with the code and TLS keys, "
        "for mse-run --provision sealed ({} seals only the keys)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        metavar="PEM",
        help="private key of the enclave's mse-run --certificate",
    )


def _read_tls_key(path: Path | None) -> str | None:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from mse_base._internal.files import private_key_pem
    from mse_base.errors import UsageError

    if path is None:
        return None
    pem = read_input(path, "--tls-key", 64 * 1024, "give the PEM private key", stdin=False)
    try:
        key = load_pem_private_key(pem, password=None)
    except UnsupportedAlgorithm:
        raise UsageError(
            f"--tls-key {path}: the key type is not supported; use an RSA, EC or Ed25519 key"
        ) from None
    except TypeError:
        raise UsageError(
            f"--tls-key {path}: the key is encrypted; decrypt it first (openssl pkey -in "
            f"{path} -out key.pem), the enclave has no passphrase"
        ) from None
    except ValueError:
        raise UsageError(f"--tls-key {path}: not a PEM private key") from None
    return private_key_pem(key).decode("ascii")


def _payload(args: argparse.Namespace, uuid: str) -> Payload:
    """What push sends and serve releases: the files read, not yet checked as the enclave will."""
    from mse_base._internal.provision import codefile
    from mse_base._internal.provision.protocol import Payload

    code_key = codefile.read_key(args.code_key, "--code-key") if args.code_key else None
    sealed = args.sealed_secrets
    return Payload(
        uuid=uuid,
        secrets=_read_secrets(args.secrets, "--secrets"),
        code_key=code_key,
        sealed_secrets=None if sealed is None else _read_secrets(sealed, "--sealed-secrets"),
        tls_key=_read_tls_key(args.tls_key),
    )


def _described(payload: Payload) -> str:
    what = [f"{len(payload.secrets)} secret(s)"]
    if payload.sealed_secrets is not None:
        what.append(f"{len(payload.sealed_secrets)} sealed secret(s)")
    if payload.code_key is not None:
        what.append("the code key")
    if payload.tls_key is not None:
        what.append("the TLS key")
    return ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else what[0]


def _checked_body(body: bytes, parse: Callable[[bytes], object]) -> bytes:
    """``body`` once it passes what the enclave will check: refused here, not after sending."""
    from mse_base._internal.provision.protocol import MAX_BODY, Refused
    from mse_base.errors import UsageError

    if len(body) > MAX_BODY:
        raise UsageError(
            f"--secrets, --sealed-secrets and the keys are over {MAX_BODY} bytes once encoded"
        )
    try:
        parse(body)
    except Refused as refused:
        raise UsageError(f"the secrets files: {refused}") from None
    return body


def _read_secrets(path: Path | None, option: str) -> dict[str, Any]:
    from mse_base.errors import UsageError

    if path is None:
        return {}
    from mse_base._internal.provision.protocol import MAX_BODY, MAX_DEPTH, Refused, loads

    # Standard input too, so the secrets need not be in a file at all.
    raw = read_input(path, option, MAX_BODY, "pass a JSON file of name: value, or -")
    try:
        # The enclave's own reading (its messages never quote the file, which holds secrets),
        # so whatever it would refuse is refused here, before anything is sent.
        data = loads(raw, max_depth=MAX_DEPTH + 1)
    except Refused as refused:
        said = str(refused).removeprefix("the body is ").replace("the body", "the file")
        raise UsageError(f"{option} {path}: {said}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{option} {path}: must be a JSON object of name: value")
    return data


def _warn_signer_trusted(options: PolicyOptions) -> None:
    signer = options.policy.mrsigner
    if options.trust_signer_key_holder and not options.policy.mrenclave and signer is not None:
        logging.getLogger("mse-secrets").warning(
            "warning: releasing to any enclave signed with the key of MRSIGNER %s, whatever its "
            "code: whoever holds that key (a host that signs with it, too) can have it",
            signer.hex(),
        )


def _push(args: argparse.Namespace) -> int:
    from mse_base._internal.enclave.deployment import parse_uuid
    from mse_base._internal.provision import client
    from mse_base._internal.provision.protocol import parse_payload
    from mse_base.errors import VerificationError

    if not args.debug:
        warnings.simplefilter("ignore")  # as mse-verify: one line, not library warnings
    options = policy_options(args)
    options.require_identity("--mrenclave HEX", "--trust-signer-key-holder")
    _warn_signer_trusted(options)
    deployment_id = parse_uuid(args.uuid)
    payload = _payload(args, str(deployment_id))
    body = _checked_body(payload.encode(), parse_payload)
    host, port = https_address(args.url)
    verifier = build_verifier(args, options)
    try:
        answer = client.send(host, port, verifier, body, at=options.at, deployment=deployment_id)
    except VerificationError as err:
        explained = explain_rejection(err, args)
        rejected = VerificationError(
            f"{explained.diagnostics()}; nothing was sent", check=err.failed_check
        )
        rejected.partial = err.partial
        raise rejected from err
    if answer.status != 200:
        hint = ""
        if answer.status == 404:
            hint = " (is the enclave running with mse-run --provision push?)"
        raise client.PushFailed(
            f"the enclave refused the push: {answer.status} {answer.message}{hint}"
        )
    result = answer.verified
    if result.simulation:
        print(f"*** {SIMULATION_BANNER} ***")
    print(f"provisioned: {_described(payload)} to {args.url}")
    print(f"  MRENCLAVE   {result.mrenclave.hex()}{mrenclave_label(result)}")
    print(f"  MRSIGNER    {result.mrsigner.hex()}")
    print(f"  TCB status  {result.tcb_status}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from mse_base._internal.enclave.deployment import parse_bind, parse_port
    from mse_base._internal.provision import server
    from mse_base._internal.provision.protocol import parse_release
    from mse_base.errors import UsageError

    if not args.debug:
        warnings.simplefilter("ignore")
    if args.at is not None:
        # A server that runs for months deciding at one fixed moment would keep releasing
        # secrets under certificates and collateral that have since expired or been revoked.
        raise UsageError(
            f"--at {args.at!r}: mse-secrets serve verifies each enclave at the moment it "
            "connects; remove --at (mse-verify --at checks a certificate at another time)"
        )
    options = policy_from_file(args.policy, args)
    try:
        options.require_identity("mrenclave", "trust_signer_key_holder = true")
    except UsageError as err:
        raise UsageError(f"--policy {args.policy}: {err}") from None
    _warn_signer_trusted(options)
    release = _payload(args, "")
    body = _checked_body(release.encode_release(), parse_release)
    bind, port = parse_bind(_serve_bind(args)), parse_port(args.port)
    context = server.server_context(args.cert, args.key)
    verifier = build_verifier(args, options)
    try:
        httpd = server.SecretsServer((bind, port), context, verifier, body)
    except OSError as err:
        raise UsageError(f"cannot listen on {bind}:{port} ({err.strerror or err})") from None

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    log = logging.getLogger("mse-secrets")
    log.info("serving %s on https://%s:%d/mse/secrets to enclaves passing %s",
             _described(release), bind, port, args.policy)  # fmt: skip
    with httpd:
        httpd.serve_forever()
    log.info("stopped")
    return 0


def _serve_bind(args: argparse.Namespace) -> str:
    """``--bind``, or the default: as mse-run's, this machine only when trusting simulated
    enclaves (``--simulation-ca``: a test setup), all interfaces otherwise."""
    from mse_base._internal.enclave.deployment import DEFAULT_BIND, LOCAL_BIND

    if args.bind is not None:
        return str(args.bind)
    return LOCAL_BIND if args.simulation_ca is not None else DEFAULT_BIND


def _encrypt(args: argparse.Namespace) -> int:
    from mse_base._internal.enclave.codetar import MAX_TAR_FILE, inspect_code
    from mse_base._internal.files import write_atomic
    from mse_base._internal.provision import codefile
    from mse_base.errors import UsageError

    for option, path in (("--key-out", args.key_out), ("-o", args.output)):
        if os.path.lexists(path):
            # A key other ciphertexts may need, or a file someone else keeps: never replaced.
            raise UsageError(f"{option} {path}: the file exists; remove it or choose another path")
    if os.path.realpath(args.key_out) == os.path.realpath(args.output):
        # Neither exists yet, but both name one file (directly or through a linked directory):
        # the ciphertext would overwrite the only copy of its key.
        raise UsageError(
            f"--key-out {args.key_out} and -o {args.output} are the same file; the key and the "
            "encrypted code need two paths"
        )
    if codefile.is_encrypted(args.tar):
        raise UsageError(f"{args.tar} is already encrypted; give the plain tar")
    inspect_code(args.tar)  # the checks mse-run applies, before the tar is sealed
    plaintext = read_input(args.tar, "tar", MAX_TAR_FILE, "pass the app's tar", stdin=False)
    key = codefile.new_key()
    sealed = codefile.encrypt(plaintext, key)
    try:
        codefile.write_key(args.key_out, key)
        write_atomic(args.output, sealed, 0o644)
    except OSError as err:
        args.key_out.unlink(missing_ok=True)
        raise UsageError(f"cannot write {err.filename}: {err.strerror or err}") from None
    print(f"encrypted {args.tar} -> {args.output}; key in {args.key_out} (0600, keep it secret)")
    logging.getLogger("mse-secrets").info(
        "run it with mse-run --code %s --provision push, then mse-secrets push ... --code-key %s",
        args.output,
        args.key_out,
    )
    return 0


def _dev_ca(args: argparse.Namespace) -> int:
    from mse_base._internal.enclave.deployment import parse_host
    from mse_base._internal.provision import devca
    from mse_base.errors import UsageError

    names: list[str] = []
    for text in args.name or devca.DEFAULT_NAMES:
        try:
            name = parse_host(text)
        except UsageError:
            raise UsageError(
                f"--name {text!r} is neither a DNS name nor an IP address: give a name clients "
                "connect to, such as localhost, 127.0.0.1 or app.example.com"
            ) from None
        if name not in names:
            names.append(name)
    days = devca.DEFAULT_DAYS if args.days is None else args.days
    made = devca.create(args.directory, names, days)
    print(made.summary())
    return 0


def _simulation_ca(_args: argparse.Namespace) -> int:
    from mse_base._internal.simulation.pki import ensure_simulation_pki, simulation_pki_exists

    existed = simulation_pki_exists()
    pki = ensure_simulation_pki()
    logging.getLogger("mse-secrets").info(
        "%s the simulation CA: NOT SGX; it signs the simulated quotes of mse-run --simulation "
        "and --direct on this machine, and a verifier given it accepts only those",
        "using" if existed else "created",
    )
    # Alone on stdout, so that --simulation-ca "$(mse-secrets simulation-ca)" works.
    print(pki.ca_pem_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    body = {"push": _push, "serve": _serve, "dev-ca": _dev_ca, "simulation-ca": _simulation_ca}.get(
        args.command, _encrypt
    )
    result = guard("mse-secrets", body, args)
    sys.stdout.flush()
    return result
