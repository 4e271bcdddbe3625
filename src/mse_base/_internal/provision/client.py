"""The owner's side of a push: verify the enclave, then send over the connection just verified.

One TLS connection carries both: the certificate the server presents on it is verified (its
quote, the key binding, the policy) before a single byte of the request is written, and the
request then goes down the same socket. TLS proves the server holds the certificate's private
key, and the quote binds that key to the enclave, so the request reaches that enclave and no
other; a second connection could reach another server.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from mse_base._internal.provision.protocol import PATH
from mse_base.errors import Error, VerificationError

if TYPE_CHECKING:
    from mse_base.verify import VerificationResult, Verifier

_TIMEOUT = 60.0
_MAX_ANSWER = 64 * 1024


class PushFailed(Error):
    """The enclave was verified but did not accept the request (its answer says why)."""


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    verified: VerificationResult


def _message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        text = str(data.get("error") or data.get("status") or "")
    except (ValueError, AttributeError):
        text = raw.decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable())[:300]


def check_deployment(der: bytes, deployment: uuid.UUID) -> None:
    """Refuse (``policy.deployment``) a verified certificate made for another deployment.

    The enclave writes its ``--uuid``, which is in its measured argv, as the subject's one
    ``serialNumber`` of the RA-TLS certificate it signs with the key its quote binds. So once the
    certificate verified, the name is the enclave's own word: with MRENCLAVE pinned it is
    already fixed by the measurement, and this check tells the owner which deployment answered
    before any secret leaves (two deployments of one release share an MRENCLAVE list); with a
    trusted signer it is as good as the signer's code. It proves nothing about an enclave that
    did not verify, and the UUID itself is no secret (the host reads it in the manifest).
    """
    certificate = x509.load_der_x509_certificate(der)
    names = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    found = [str(name.value) for name in names]
    if found != [str(deployment)]:
        shown = ", ".join(repr(value[:40]) for value in found) or "none"
        raise VerificationError(
            f"deployment: the enclave's certificate is for deployment {shown} (its subject "
            f"serialNumber), not --uuid {deployment}; nothing was sent",
            check="policy.deployment",
        )


def send(
    host: str,
    port: int,
    verifier: Verifier,
    body: bytes,
    *,
    at: datetime | None = None,
    path: str = PATH,
    deployment: uuid.UUID | None = None,
) -> Answer:
    """POST ``body`` to ``path`` on the RA-TLS server at ``host:port`` once it verifies.

    With ``deployment``, the verified certificate must also be that deployment's (see
    :func:`check_deployment`). Raises :class:`VerificationError` (nothing sent) when the
    certificate is refused.
    """
    context = ssl.create_default_context()
    # The quote inside the certificate is the trust anchor, checked below, not a CA.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=_TIMEOUT)
    except OSError as err:
        raise Error(f"cannot connect to {where}: {err.strerror or err}") from None
    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError) as err:
            raise VerificationError(
                f"TLS handshake with {where} failed: {err}", check="ratls.unreachable"
            ) from None
        with tls:
            der = tls.getpeercert(binary_form=True)
            if not der:
                raise VerificationError(
                    f"{where} presented no certificate", check="ratls.unreachable"
                )
            verified = verifier.verify_certificate(der, at=at)
            if deployment is not None:
                from mse_base.verify import PartialResult

                try:
                    check_deployment(der, deployment)
                except VerificationError as err:
                    err.partial = PartialResult.of(verified)
                    raise
            connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT)
            connection.sock = tls  # the verified connection: http.client never opens its own
            try:
                connection.request(
                    "POST", path, body=body, headers={"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                answer = response.read(_MAX_ANSWER)
            except (OSError, http.client.HTTPException) as err:
                raise Error(f"{where} did not answer the provisioning request: {err}") from None
    return Answer(response.status, _message(answer), verified)
