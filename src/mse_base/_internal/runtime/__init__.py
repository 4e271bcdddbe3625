"""The program inside the enclave.

Owns what runs under Gramine once ``mse-bootstrap`` starts: loading the app (``application``),
getting a quote (``attestation``), making the RA-TLS key and certificate and starting the server
(``bootstrap``), the one-shot push provisioning endpoint and the secrets it keeps in enclave
memory (``provisioning``), the state it seals for a restart (``sealed``), keeping encrypted
code's source out of what it prints (``tracebacks``), and the in-process HTTPS server
(``serve``).

May import ``mse_base.errors``, the shared ``files``, ``enclave.deployment`` (the measured
parameters, parsed the same way as on the host), ``enclave.manifest`` (the in-enclave paths),
``enclave.codetar`` and ``enclave.requirements`` (the host's tar and requirements checks, for
decrypted code), ``dcap.quote`` and ``dcap.ratls`` (the quote layout and the certificate format),
``provision.protocol`` and ``provision.codefile`` (the push and encrypted-code formats),
``provision.connections`` (the connection slots the push endpoint shares with the pull server) and
``simulation`` (the quote source when there is no SGX). Never imports the verifier: the enclave
proves, it does not check.
"""
