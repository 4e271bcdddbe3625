"""Serve one app the way the bootstrap does: load_application, then serve. Used by the tests.

Usage: run_server.py SPEC CODE_DIR PORT [CERT KEY]. Prints READY once listening; errors are one
line on stderr and the error's exit code, as in the CLI.
"""

import logging
import sys
from pathlib import Path

from mse_base._internal.runtime.application import load_application
from mse_base._internal.runtime.serve import TLSFiles, serve
from mse_base.errors import Error


def main() -> int:
    spec, code_dir, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    tls = TLSFiles(Path(sys.argv[4]), Path(sys.argv[5])) if len(sys.argv) > 5 else None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        app = load_application(spec, code_dir)
        print(f"INTERFACE {app.interface}", flush=True)
        serve(
            app,
            bind="127.0.0.1",
            port=port,
            tls=tls,
            access_log=True,
            on_ready=lambda: print("READY", flush=True),
        )
    except Error as err:
        print(f"run_server: error: {err.diagnostics()}", file=sys.stderr)
        return err.exit_code
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
