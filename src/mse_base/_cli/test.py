"""``mse-test``: serve the app outside any enclave, to check the image holds its dependencies."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from mse_base._cli import guard


def _test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mse-test",
        description="Serve the app outside any enclave, over plain HTTP, to check the image.",
    )
    parser.add_argument("--application", required=True, help="module:attribute, e.g. app:app")
    parser.add_argument(
        "--code-dir",
        type=Path,
        default=Path("/mse-app"),
        help="the app's directory (default /mse-app, where the image's examples mount it)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", default="5000", help="TCP port (default 5000)")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    return parser


def _test(args: argparse.Namespace) -> int:
    from mse_base._internal.enclave import deployment as dep
    from mse_base._internal.enclave.requirements import check_requirements
    from mse_base._internal.runtime.application import load_application
    from mse_base._internal.runtime.serve import serve
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _test_parser().parse_args(argv)
    return guard("mse-test", _test, args)
