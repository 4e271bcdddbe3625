"""Intel SGX DCAP verification: the core behind :mod:`mse_base.verify`.

Owns the quote format (``quote``), the PCK certificate chain and its SGX extensions (``chain``,
``pck``), collateral and its signatures (``collateral``), the TCB status rules (``tcb``), fetching
collateral from Intel PCS or a PCCS (``pccs``), the RA-TLS certificate forms (``ratls``) and the
verification error types (``errors``).

May import ``mse_base.errors`` and the shared ``files`` and ``utc``, plus the package's trust
store. Nothing else: this is what a client installs to check an enclave, so it must not pull in
the launcher, the server or the simulation.
"""
