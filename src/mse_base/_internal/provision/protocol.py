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

Secret values are any JSON the owner chose, within limits every reader of the enclave's secrets
file can honour: finite numbers (``1e400`` would become ``Infinity``, which is not JSON), text
that is valid Unicode (a lone surrogate such as ``"\ud800"`` has no UTF-8 form), and at most
:data:`MAX_DEPTH` levels of arrays and objects below each secret (deeper values make recursive
readers such as :func:`copy.deepcopy` fail). A body outside them is refused with 400.

Pull is the other direction: the enclave asks ``GET /mse/secrets`` of the owner's
``mse-secrets serve`` with its RA-TLS certificate as TLS client certificate, and gets 200 with
the push body's fields but ``uuid`` (the server answers every enclave its policy accepts the
same) or 403 ``{"error": "<check>: ...", "failed_check": "<check>"}``, naming the failed check
and what the enclave's own certificate showed, never what the policy allows.

May import ``mse_base.errors`` only: the enclave's runtime uses this module.
"""

from __future__ import annotations

import json
import math
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
#: Levels of arrays and objects a secret's value may nest (a secret holding ``{"a": [1]}`` uses
#: 2). Python's own JSON and copy recursion stops near 1,000; this leaves room for both.
MAX_DEPTH = 32


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


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Refused(400, "the body holds a number too large for a double (it would be Infinity)")
    return value


def loads(body: bytes, max_depth: int = MAX_DEPTH + 2) -> Any:
    """``body`` as JSON, refused (:class:`Refused`, 400) unless every reader would read it alike.

    Beyond the JSON grammar: no repeated key in an object, no ``NaN``/``Infinity`` and no
    number that overflows to one, no lone surrogate, at most ``max_depth`` nested arrays and
    objects: by default a request body's, where each secret sits two objects deep and may nest
    :data:`MAX_DEPTH` levels (a file of name: value passes ``MAX_DEPTH + 1``).
    """
    try:
        data = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except (ValueError, RecursionError):
        # The decoder's message may quote the body, which may hold secrets: say only that.
        raise Refused(400, "the body is not UTF-8 JSON") from None
    check_value(data, max_depth)
    return data


def check_value(value: Any, max_depth: int) -> None:
    """Refuse (:class:`Refused`, 400) text with no UTF-8 form and nesting over ``max_depth``.

    Iterative, so that a value deeper than the interpreter's recursion limit is judged too.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _utf8(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise Refused(
                    400, f"a secret nests arrays and objects more than {MAX_DEPTH} levels deep"
                )
            if isinstance(item, dict):
                for key in item:
                    _utf8(key)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON's \uD800 escape decodes to a surrogate that no UTF-8 file can hold.
        raise Refused(400, "the body holds a lone surrogate, which is not Unicode text") from None


def parse_payload(body: bytes) -> Payload:
    """The request body checked field by field; :class:`Refused` (400) names what is wrong."""
    return _parse(body, _FIELDS)


def parse_release(body: bytes) -> Payload:
    """A secrets server's answer (pull), checked as a push body is; its ``uuid`` is empty."""
    return _parse(body, _RELEASE_FIELDS)


def _parse(body: bytes, fields: frozenset[str]) -> Payload:
    data = loads(body)
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
