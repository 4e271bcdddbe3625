"""mse-base: run a Python web app in an Intel SGX enclave and prove which code runs there.

The public API is small: :mod:`mse_base.verify` checks SGX quotes and RA-TLS certificates,
:mod:`mse_base.errors` holds the error types. Everything under ``_internal`` may change.
"""

__version__ = "0.1.0"
