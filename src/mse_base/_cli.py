"""The command-line interface: the only module that parses arguments and prints.

Each console script (``mse-run``, ``mse-test``, ``mse-verify``, ``mse-bootstrap``) has a
``*_main`` function here. Library code raises :class:`mse_base.errors.Error`; :func:`_guard` turns
it into one line on stderr and the error's exit code, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from mse_base.errors import Error


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
    try:
        return body(args)
    except Error as err:
        _fail(prog, err, debug)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# --- mse-run -------------------------------------------------------------------------------


def run_main(argv: Sequence[str] | None = None) -> int:
    raise NotImplementedError


# --- mse-test ------------------------------------------------------------------------------


def test_main(argv: Sequence[str] | None = None) -> int:
    raise NotImplementedError


# --- mse-bootstrap (runs inside the enclave) ----------------------------------------------


def bootstrap_main(argv: Sequence[str] | None = None) -> int:
    raise NotImplementedError


# --- mse-verify ----------------------------------------------------------------------------


def verify_main(argv: Sequence[str] | None = None) -> int:
    raise NotImplementedError
