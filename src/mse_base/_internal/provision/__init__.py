"""Provisioning: what an enclave's owner hands it after attestation, and how.

Owns the wire format of a push (``protocol``: the endpoint, the size limit, the JSON body and its
checks), the encrypted-code file format (``codefile``: AES-256-GCM with a magic + version
header) and the owner's side of a push (``client``: verify the enclave's RA-TLS certificate, then
send over that same TLS connection).

May import ``mse_base.errors``, :mod:`mse_base.verify` and ``dcap`` (``client`` only: the owner
verifies). ``protocol`` and ``codefile`` import nothing of the package but ``errors`` and
``files``: the enclave's runtime and the host's pipeline use them, and must not pull in the
verifier.
"""
