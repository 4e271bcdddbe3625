"""``mse-bootstrap``: the enclave's measured entry point (``python -m mse_base._bootstrap``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mse_base._cli import deployment, guard


def _bootstrap(args: argparse.Namespace) -> int:
    from mse_base._internal.runtime import bootstrap

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
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104
    parser.add_argument("--port", default="443")
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
