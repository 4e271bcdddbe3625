"""The secrets the enclave's owner provisioned, for the app running inside the enclave.

::

    from mse_base import secrets

    api_key = secrets.get("API_KEY")          # KeyError if no secret has that name
    region = secrets.get("REGION", "eu")      # or a default
    everything = secrets.all()                # a new dict of name: value on every call

Values are whatever JSON the owner provisioned (``mse-secrets push`` or ``serve``, with
``--secrets`` and ``--sealed-secrets``: both kinds appear here alike). They are read from the
file the environment variable ``MSE_SECRETS`` names, a JSON object the bootstrap writes in
enclave memory once provisioned (``mse-run --provision push``, ``pull``, or ``sealed``, which
restores only the sealed ones); apps in other languages can read that file directly. Outside
such an enclave there are no secrets and :class:`SecretsUnavailable` says so; to try an app with
``mse-test``, set ``MSE_SECRETS`` to a JSON file of test values.
"""

from __future__ import annotations

import copy
import functools
import os
from typing import Any

from mse_base._internal.files import read_limited
from mse_base._internal.provision.protocol import MAX_DEPTH, Refused, loads
from mse_base.errors import Error

__all__ = ["ENV", "SecretsUnavailable", "all", "get"]

#: The environment variable naming the secrets file.
ENV = "MSE_SECRETS"
_MISSING = object()
# The bootstrap writes at most a 1 MiB body's secrets, re-encoded (escapes may grow them).
_MAX_FILE = 16 << 20


class SecretsUnavailable(Error):
    """No provisioned secrets here: the app does not run in a provisioned enclave."""


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    # Written once before the app is imported and never changed, so read once.
    try:
        raw = read_limited(path, _MAX_FILE)
    except OSError as err:
        raise SecretsUnavailable(
            f"{ENV}={path}: cannot read the secrets file ({type(err).__name__})"
        ) from None
    try:
        # As the enclave reads a provisioned body, so a hand-written test file (mse-test) is
        # held to the same limits: a value that loads here also copies (all(), get()).
        data = loads(raw, max_depth=MAX_DEPTH + 1)
    except Refused as refused:
        # Never the content: it is the secrets (the reason names no value).
        said = str(refused).replace("the body", "the secrets file")
        raise SecretsUnavailable(f"{ENV}={path}: {said}") from None
    if not isinstance(data, dict):
        raise SecretsUnavailable(f"{ENV}={path}: the secrets file is not a JSON object")
    return data


def _secrets() -> dict[str, Any]:
    path = os.environ.get(ENV)
    if not path:
        raise SecretsUnavailable(
            f"no provisioned secrets: {ENV} is not set (secrets exist only in an enclave started "
            "with mse-run --provision, once it was provisioned); to try the app with mse-test, "
            f"set {ENV}=path/to/test-secrets.json, a JSON object of name: value"
        )
    return _load(path)


def all() -> dict[str, Any]:  # shadows the builtin on purpose: secrets.all()
    """Every provisioned secret, as a new ``{name: value}`` dict."""
    return copy.deepcopy(_secrets())


def get(name: str, default: Any = _MISSING) -> Any:
    """The secret ``name``; ``default`` if given and there is none, else :class:`KeyError`."""
    values = _secrets()
    if name in values:
        return copy.deepcopy(values[name])
    if default is _MISSING:
        raise KeyError(f"no secret named {name!r} was provisioned")
    return default
