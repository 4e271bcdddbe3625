"""The push protocol, shared by the owner's client and the enclave's endpoint.

One request, ``POST /mse/provision`` with a JSON object over the enclave's RA-TLS connection::

    {"uuid": "<the deployment UUID, as measured>",
     "secrets": {"NAME": <any JSON value>, ...},      (optional)
     "code_key": "<64 hex digits>"}                   (required when the code is encrypted)

Answers are JSON objects: ``{"status": "provisioned"}`` with 200, else ``{"error": "..."}`` with
400 (not JSON, not this shape), 401 (another UUID), 404 / 405 (another path or method), 409
(already provisioned), 411 (no Content-Length), 413 (body over :data:`MAX_BODY`) or 422 (the
code key does not decrypt the code). Error texts name fields, never their values.

Pull is the other direction: the enclave asks ``GET /mse/secrets`` of the owner's
``mse-secrets serve`` with its RA-TLS certificate as TLS client certificate, and gets 200 with
``{"secrets": {...}, "code_key": "..."}`` (no uuid: the server answers every enclave its policy
accepts the same) or 403 ``{"error": "..."}``.

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
_FIELDS = frozenset({"uuid", "secrets", "code_key"})
_RELEASE_FIELDS = frozenset({"secrets", "code_key"})
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_MAX_NAME = 256


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
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    code_key: bytes | None = field(default=None, repr=False)  # repr=False: never in a traceback

    def encode(self) -> bytes:
        return self._encode({"uuid": self.uuid})

    def encode_release(self) -> bytes:
        """The answer of a secrets server (pull): no uuid."""
        return self._encode({})

    def _encode(self, body: dict[str, Any]) -> bytes:
        body["secrets"] = self.secrets
        if self.code_key is not None:
            body["code_key"] = self.code_key.hex()
        return json.dumps(body, separators=(",", ":")).encode("utf-8")


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
    secrets = data.get("secrets", {})
    if not isinstance(secrets, dict):
        raise Refused(400, "field 'secrets' must be an object of name: value")
    if any(not name or len(name) > _MAX_NAME for name in secrets):
        raise Refused(400, f"secret names must be 1 to {_MAX_NAME} characters")
    code_key = data.get("code_key")
    if code_key is not None and not (isinstance(code_key, str) and _HEX_KEY.fullmatch(code_key)):
        raise Refused(400, "field 'code_key' must be 64 hex digits (an AES-256 key)")
    return Payload(
        uuid=uuid,
        secrets=secrets,
        code_key=bytes.fromhex(code_key) if code_key is not None else None,
    )
