"""``python -m mse_base._bootstrap``: the enclave's measured command line starts here."""

import sys

from mse_base._cli.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
