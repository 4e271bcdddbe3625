"""``mse-bootstrap``: the enclave's measured entry point (``python -m mse_base._bootstrap``).

Its options are the measured argv (``Deployment.bootstrap_args``); the port and bind address
come from the environment, unmeasured (``MSE_PORT``, ``MSE_BIND``; see ``enclave.deployment``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mse_base._cli import deployment, guard


def _bootstrap(args: argparse.Namespace) -> int:
    import os

    from mse_base._internal.enclave.deployment import listen_from_environment
    from mse_base._internal.runtime import bootstrap

    # The listening address is the host's to choose, so it comes unmeasured from the
    # environment (MSE_PORT, MSE_BIND), checked before anything else happens.
    args.bind, args.port = listen_from_environment(os.environ)
    bootstrap.run(deployment(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mse-bootstrap",
        description="Inside the enclave: attest a fresh TLS key, serve the app.",
    )
    parser.add_argument("--application", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--uuid", required=True)
    parser.add_argument("--self-signed", required=True)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--provision", choices=["push", "pull"])
    parser.add_argument("--secrets-server")
    parser.add_argument("--secrets-server-ca-pem")
    parser.add_argument("--provision-timeout")
    parser.add_argument("--encrypted-code", action="store_true")
    parser.add_argument("--certificate-pem")
    parser.add_argument("--subject")
    parser.add_argument("--san", action="append", default=[])
    return guard("mse-bootstrap", _bootstrap, parser.parse_args(argv))
