"""The push protocol, shared by the owner's client and the enclave's endpoint.

One request, ``POST /mse/provision`` with a JSON object over the enclave's RA-TLS connection::

    {"uuid": "<the deployment UUID, as measured>",
     "secrets": {"NAME": <any JSON value>, ...},          (optional)
     "sealed_secrets": {"NAME": <any JSON value>, ...},   (optional: see below)
     "code_key": "<64 hex digits>",                       (required when the code is encrypted)
     "tls_key": "<PEM private key>"}                      (required with mse-run --certificate)

``sealed_secrets`` are given to the app as ``secrets`` are (one name must not be in both), and
their presence, even as ``{}``, asks the enclave to seal what a restart needs (those secrets, the
code key, the TLS key) to its MRENCLAVE-bound storage, for ``mse-run --provision sealed``.

Answers are JSON objects: ``{"status": "provisioned"}`` with 200, else ``{"error": "..."}`` with
400 (not JSON, not this shape), 401 (another UUID), 404 / 405 (another path or method), 409
(already provisioned), 411 (no Content-Length), 413 (body over :data:`MAX_BODY`) or 422 (the
code key does not decrypt the code). Error texts name fields, never their values.

Pull is the other direction: the enclave asks ``GET /mse/secrets`` of the owner's
``mse-secrets serve`` with its RA-TLS certificate as TLS client certificate, and gets 200 with
the push body's fields but ``uuid`` (the server answers every enclave its policy accepts the
same) or 403 ``{"error": "<check>: ...", "failed_check": "<check>"}``, naming the failed check
and what the enclave's own certificate showed, never what the policy allows.

May import ``mse_base.errors`` only: the enclave's runtime uses this module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mse_base.errors import Error

PATH = "/mse/provision"
PULL_PATH = "/mse/secrets"
MAX_BODY = 1 << 20
_FIELDS = frozenset({"uuid", "secrets", "sealed_secrets", "code_key", "tls_key"})
_RELEASE_FIELDS = _FIELDS - {"uuid"}
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_MAX_NAME = 256
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[\x20-\x7e\r\n]+\Z")


def loggable(text: str, limit: int) -> str:
    """``text`` for a log line: what a client sent (a path, a reason) cannot write terminal
    escape sequences or fake lines into the log. Unprintable characters are escaped as
    ``\\x1b``, and a text over ``limit`` characters is cut with the count of the rest."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if len(shown) > limit:
        return f"{shown[:limit]}... ({len(shown) - limit} more characters)"
    return shown


class Refused(Error):
    """A provisioning request the enclave turns down; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        # Told to the owner only, never logged: it may name what the encrypted code holds.
        self.detail = detail


@dataclass(frozen=True)
class Payload:
    uuid: str
    # repr=False: never in a traceback.
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    code_key: bytes | None = field(default=None, repr=False)
    # None: nothing to seal; a dict (even empty): seal these with the keys, for a restart.
    sealed_secrets: dict[str, Any] | None = field(default=None, repr=False)
    tls_key: str | None = field(default=None, repr=False)  # PEM, for mse-run --certificate

    def app_secrets(self) -> dict[str, Any]:
        """What the app sees: both kinds, in one namespace (parsing refused a shared name)."""
        return {**self.secrets, **(self.sealed_secrets or {})}

    def encode(self) -> bytes:
        return self._encode({"uuid": self.uuid})

    def encode_release(self) -> bytes:
        """The answer of a secrets server (pull): no uuid."""
        return self._encode({})

    def _encode(self, body: dict[str, Any]) -> bytes:
        body["secrets"] = self.secrets
        if self.sealed_secrets is not None:
            body["sealed_secrets"] = self.sealed_secrets
        if self.code_key is not None:
            body["code_key"] = self.code_key.hex()
        if self.tls_key is not None:
            body["tls_key"] = self.tls_key
        # Raw UTF-8, not \u escapes: re-encoding what was received never makes it several times
        # larger (a 4-byte emoji is 12 bytes escaped), so what an enclave seals stays near the
        # size of what it accepted.
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two values for one name: which one wins would differ between JSON readers.
            raise Refused(400, "the body repeats a key in one JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise Refused(400, f"the body holds {name}, which is not JSON")


def parse_payload(body: bytes) -> Payload:
    """The request body checked field by field; :class:`Refused` (400) names what is wrong."""
    return _parse(body, _FIELDS)


def parse_release(body: bytes) -> Payload:
    """A secrets server's answer (pull), checked as a push body is; its ``uuid`` is empty."""
    return _parse(body, _RELEASE_FIELDS)


def _parse(body: bytes, fields: frozenset[str]) -> Payload:
    try:
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        # The decoder's message may quote the body, which may hold secrets: say only that.
        raise Refused(400, "the body is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise Refused(400, f"unknown field(s) {names}; the fields are {', '.join(sorted(fields))}")
    uuid = data.get("uuid", "" if "uuid" not in fields else None)
    if not isinstance(uuid, str):
        raise Refused(400, "field 'uuid' is required and must be a string")
    secrets = _secrets(data, "secrets")
    sealed = _secrets(data, "sealed_secrets") if "sealed_secrets" in data else None
    shared = sorted(set(secrets) & set(sealed or {}))
    if shared:
        # Names, not values: the owner wrote both files and must know which to fix.
        names = ", ".join(repr(name[:40]) for name in shared[:5])
        raise Refused(400, f"'secrets' and 'sealed_secrets' both name {names}; keep one")
    code_key = data.get("code_key")
    if code_key is not None and not (isinstance(code_key, str) and _HEX_KEY.fullmatch(code_key)):
        raise Refused(400, "field 'code_key' must be 64 hex digits (an AES-256 key)")
    tls_key = data.get("tls_key")
    if tls_key is not None and not (isinstance(tls_key, str) and _PEM_KEY.match(tls_key)):
        raise Refused(400, "field 'tls_key' must be a PEM private key")
    return Payload(
        uuid=uuid,
        secrets=secrets,
        code_key=bytes.fromhex(code_key) if code_key is not None else None,
        sealed_secrets=sealed,
        tls_key=tls_key,
    )


def _secrets(data: dict[str, Any], name: str) -> dict[str, Any]:
    secrets = data.get(name, {})
    if not isinstance(secrets, dict):
        raise Refused(400, f"field {name!r} must be an object of name: value")
    if any(not key or len(key) > _MAX_NAME for key in secrets):
        raise Refused(400, f"secret names must be 1 to {_MAX_NAME} characters")
    return secrets
