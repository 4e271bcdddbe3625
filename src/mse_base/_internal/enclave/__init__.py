"""Building and launching an enclave, on the host.

Owns everything ``mse-run`` does before and around the enclave: the measured parameters
(``deployment``, ``size``), the code tar (``codetar``), the app's requirements check, the Gramine
manifest (``manifest``), the SIGSTRUCT and its signing key (``sigstruct``, ``signer``), the
measurement (``measure``), the pipeline that ties them together and launches (``pipeline``), and
the supervision of the launched process (``supervise``).

May import ``mse_base.errors``, the shared ``files``, ``utc`` and ``extras``, and
``provision.codefile`` (the encrypted-code format, whose files the code-tar module stages unread).
Never imports ``runtime``: the enclave's own code must not be needed to build it. Only
``supervise``, which checks the enclave it started, may also import the verifier; its docstring
says what exactly.
"""
