"""Provisioning: what an enclave's owner hands it after attestation, and how.

Owns the wire formats (``protocol``: the push endpoint, the pull answer, the size limit, the JSON
body and its checks), the encrypted-code file format (``codefile``: AES-256-GCM with a magic +
version header) and the owner's sides: ``client`` (push: verify the enclave's RA-TLS
certificate, then send over that same TLS connection) and ``server`` (pull: ``mse-secrets
serve``, which verifies each enclave's client certificate before releasing anything).

May import ``mse_base.errors``, :mod:`mse_base.verify` and ``dcap`` (``client`` and ``server``
only: the owner verifies). ``protocol`` and ``codefile`` import nothing of the package but
``errors`` and ``files``: the enclave's runtime and the host's pipeline use them, and must not
pull in the verifier.
"""
