"""``python -m mse_base._bootstrap``: the enclave's measured command line starts here."""

import sys

from mse_base._cli import bootstrap_main

if __name__ == "__main__":
    sys.exit(bootstrap_main())
