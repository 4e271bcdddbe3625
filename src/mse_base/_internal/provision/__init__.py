"""Provisioning: what an enclave's owner hands it after attestation, and how.

Owns the wire formats (``protocol``: the push endpoint, the pull answer, the size limit, the JSON
body and its checks), the encrypted-code file format (``codefile``: AES-256-GCM with a magic +
version header), the connection slots both servers use (``connections``: a total deadline per
connection, a cap, fair replacement of slow clients) and the owner's sides: ``client`` (push:
verify the enclave's RA-TLS certificate, then send over that same TLS connection) and ``server``
(pull: ``mse-secrets serve``, which verifies each enclave's client certificate before releasing
anything); and, for trials, a throwaway CA with the certificates those need (``devca``:
``mse-secrets dev-ca``).

May import ``mse_base.errors``, the shared ``files`` and ``extras``, ``mse_base.verify`` and
``dcap`` (the owner verifies). Never imported by the enclave's runtime or the host's pipeline,
except the two format modules and ``connections``, which state their own narrower rule: they
must not pull in the verifier.
"""
