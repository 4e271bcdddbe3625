"""The command-line interface: one module per console script, each a thin layer over library calls.

``run`` (mse-run), ``test`` (mse-test), ``verify`` (mse-verify), ``secrets`` (mse-secrets) and
``bootstrap`` (mse-bootstrap, inside the enclave) parse arguments and print; nothing else in the
package does. ``verifier_options`` holds the verifier's options, shared by mse-verify and
mse-secrets. Library code raises :class:`mse_base.errors.Error`; :func:`guard` turns it into one
line on stderr and the error's exit code, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from mse_base.errors import Error

if TYPE_CHECKING:
    from mse_base._internal.enclave.deployment import Deployment


def _fail(prog: str, err: Error, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {err.diagnostics()}", file=sys.stderr)
    sys.exit(err.exit_code)


def guard(prog: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
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


def deployment(args: argparse.Namespace) -> Deployment:
    """The measured parameters, checked the same way by mse-run and inside the enclave."""
    from mse_base._internal.enclave import deployment as dep

    provision = dep.parse_provision(args.provision)
    host = dep.parse_host(args.host)
    return dep.Deployment(
        application=dep.parse_application(args.application),
        host=host,
        deployment_id=dep.parse_uuid(args.uuid),
        expiry=dep.parse_expiry(args.self_signed),
        bind=dep.parse_bind(args.bind),
        port=dep.parse_port(args.port),
        debug=args.debug,
        provision=provision,
        provision_timeout=dep.parse_provision_timeout(args.provision_timeout, provision),
        encrypted_code=args.encrypted_code,
        secrets_server=(
            dep.parse_secrets_server(args.secrets_server) if args.secrets_server else None
        ),
        secrets_server_ca=args.secrets_server_ca_pem,
        certificate=args.certificate_pem,
        subject=dep.parse_subject(args.subject) if args.subject is not None else None,
        sans=dep.parse_sans(args.san, host),
    )
