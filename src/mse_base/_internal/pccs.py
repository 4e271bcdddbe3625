"""Collateral over HTTP(S) from Intel PCS or a PCCS (API v4), with an on-disk cache.

Endpoints (Intel "Provisioning Certification Service for ECDSA Attestation", API v4, and the
PCCS that mirrors it), relative to ``{base}/sgx/certification/v4``:

* ``GET /tcb?fmspc=<hex>``: TCB info JSON; issuer chain in ``TCB-Info-Issuer-Chain``;
* ``GET /qe/identity``: QE identity JSON; issuer chain in ``SGX-Enclave-Identity-Issuer-Chain``;
* ``GET /pckcrl?ca=processor|platform&encoding=der``: the PCK CA CRL; issuer chain in
  ``SGX-PCK-CRL-Issuer-Chain`` (not kept: the verifier takes the PCK CA from the quote);
* ``GET /rootcacrl``: the Intel SGX Root CA CRL. PCCS serves it (hex-encoded DER text in the
  PCCS releases we know, DER elsewhere); Intel PCS itself does not, so on 404 we fall back to
  the CRL distribution point written in the trust root certificate.

Issuer chains arrive URL-encoded (percent-encoded PEM). A CRL body may be DER or hex text; both
are accepted. Every response is cached under ``$XDG_CACHE_HOME/mse/collateral/`` keyed by URL
and reused until the ``nextUpdate`` it carries (JSON ``nextUpdate``, CRL ``nextUpdate``); what
carries no ``nextUpdate`` is not cached. The cache only saves requests: everything read from it
is verified exactly like a fresh response.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.collateral import Collateral
from mse_base._internal.verify_errors import CollateralError

__all__ = ["INTEL_PCS_URL", "PCCSCollateralSource", "collateral_cache_dir"]

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
_API = "/sgx/certification/v4"
_TCB_CHAIN_HEADER = "TCB-Info-Issuer-Chain"
# What API v3 and older PCCS releases call the same header.
_TCB_CHAIN_HEADER_V3 = "SGX-TCB-Info-Issuer-Chain"
_QE_CHAIN_HEADER = "SGX-Enclave-Identity-Issuer-Chain"
_PCK_CRL_CHAIN_HEADER = "SGX-PCK-CRL-Issuer-Chain"
_KEPT_HEADERS = (_TCB_CHAIN_HEADER, _TCB_CHAIN_HEADER_V3, _QE_CHAIN_HEADER, _PCK_CRL_CHAIN_HEADER)
# Collateral bodies are a few kB; refuse anything absurd rather than buffer it.
_MAX_BODY = 4 * 1024 * 1024
_TIMEOUT = 30.0


def collateral_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mse/collateral`` (XDG default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "mse" / "collateral"


class _HTTPStatusError(CollateralError):
    """The service answered with an HTTP error status."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"collateral request {url} failed: HTTP {status} {reason}")
        self.status = status


@dataclass(frozen=True)
class _Response:
    body: bytes
    headers: Mapping[str, str]


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _json_next_update(body: bytes, key: str) -> dt.datetime | None:
    try:
        value = json.loads(body)[key]["nextUpdate"]
        return _parse_time(value) if isinstance(value, str) else None
    except (ValueError, KeyError, TypeError):
        return None


def _crl_der(body: bytes, url: str) -> bytes:
    """A CRL body as DER: PCS sends DER, PCCS's ``/rootcacrl`` sends hex text; PEM also goes."""
    if body[:1] == b"\x30":
        return body
    text = body.strip()
    with contextlib.suppress(ValueError):
        if text.startswith(b"-----BEGIN X509 CRL-----"):
            return x509.load_pem_x509_crl(text).public_bytes(serialization.Encoding.DER)
        der = bytes.fromhex(text.decode("ascii"))
        if der[:1] == b"\x30":
            return der
    raise CollateralError(f"{url} did not return a CRL (neither DER, hex nor PEM)")


def _crl_next_update(der: bytes) -> dt.datetime | None:
    try:
        return x509.load_der_x509_crl(der).next_update_utc
    except ValueError:
        return None


def _intel_root_crl_url() -> str | None:
    """The CRL distribution point of the Intel SGX Root CA shipped in the package."""
    der = resources.files("mse_base").joinpath("_store/intel_sgx_root_ca.der").read_bytes()
    root = x509.load_der_x509_certificate(der)
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    return None


class PCCSCollateralSource:
    """A :class:`~mse_base._internal.collateral.CollateralSource` backed by PCS / a PCCS.

    ``base_url`` is the service root, e.g. ``https://api.trustedservices.intel.com`` or
    ``https://pccs.example:8081``; the ``.../sgx/certification/v4/`` form that Intel's QCNL
    configuration uses is accepted too. ``cache_dir`` defaults to :func:`collateral_cache_dir`;
    ``use_cache=False`` disables the cache.
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        timeout: float = _TIMEOUT,
        root_ca_crl_url: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"collateral service URL {base_url!r} must be http(s)://host[:port]")
        base = base_url.rstrip("/")
        for version in ("/v3", "/v4"):
            base = base.removesuffix("/sgx/certification" + version)
        self._base = base
        self._cache = (cache_dir or collateral_cache_dir()) if use_cache else None
        self._timeout = timeout
        self._root_ca_crl_url = root_ca_crl_url
        #: Number of HTTP requests made (the cache tests read it).
        self.requests_made = 0

    # -- HTTP and cache ------------------------------------------------------------------------

    def _cache_path(self, url: str) -> Path | None:
        if self._cache is None:
            return None
        return self._cache / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def _cached(self, url: str, now: dt.datetime) -> _Response | None:
        path = self._cache_path(url)
        if path is None:
            return None
        try:
            entry = json.loads(path.read_bytes())
            if entry["url"] != url or _parse_time(entry["next_update"]) <= now:
                return None
            return _Response(base64.b64decode(entry["body"]), dict(entry["headers"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, url: str, response: _Response, next_update: dt.datetime | None) -> None:
        path = self._cache_path(url)
        if path is None or next_update is None:
            return
        entry = {
            "url": url,
            "next_update": next_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "headers": dict(response.headers),
            "body": base64.b64encode(response.body).decode(),
        }
        # A failed cache write only costs a request next time; never fail verification for it.
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(entry).encode())
            tmp.replace(path)

    def _get(self, url: str) -> _Response:
        request = urllib.request.Request(url, headers={"Accept": "*/*"})  # noqa: S310
        self.requests_made += 1
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:  # noqa: S310
                body = reply.read(_MAX_BODY + 1)
                headers = {
                    name: reply.headers[name] for name in _KEPT_HEADERS if name in reply.headers
                }
        except urllib.error.HTTPError as err:
            raise _HTTPStatusError(url, err.code, str(err.reason)) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise CollateralError(
                f"cannot reach the collateral service at {url}: {reason}; check --pccs-url or "
                "pass --collateral DIR"
            ) from None
        if len(body) > _MAX_BODY:
            raise CollateralError(f"collateral response from {url} is larger than {_MAX_BODY} B")
        return _Response(body, headers)

    def _fetch(self, url: str, next_update_of: str) -> _Response:
        """GET ``url`` via the cache; ``next_update_of``: "tcbInfo", "enclaveIdentity", "crl"."""
        now = dt.datetime.now(dt.timezone.utc)
        cached = self._cached(url, now)
        if cached is not None:
            return cached
        response = self._get(url)
        if next_update_of == "crl":
            response = _Response(_crl_der(response.body, url), response.headers)
            next_update = _crl_next_update(response.body)
        else:
            next_update = _json_next_update(response.body, next_update_of)
        self._store(url, response, next_update)
        return response

    # -- the endpoints ------------------------------------------------------------------------

    def _url(self, path: str, **query: str) -> str:
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{self._base}{_API}{path}{suffix}"

    @staticmethod
    def _chain(response: _Response, header: str, url: str, *aliases: str) -> bytes:
        value = next(
            (response.headers[h] for h in (header, *aliases) if response.headers.get(h)), None
        )
        if not value:
            raise CollateralError(f"{url} did not send the {header} header (the issuer chain)")
        return urllib.parse.unquote(value).encode()

    def _root_ca_crl(self) -> bytes:
        url = self._url("/rootcacrl")
        try:
            return self._fetch(url, "crl").body
        except _HTTPStatusError as err:
            fallback = self._root_ca_crl_url or _intel_root_crl_url()
            if fallback is None or err.status != 404:
                raise
            return self._fetch(fallback, "crl").body

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: dt.datetime) -> Collateral:
        """Fetch (or reuse) the collateral for ``fmspc`` whose PCK leaf ``pck_ca`` issued.

        ``at`` is not sent: the service only serves current collateral, and the verifier checks
        its validity at ``at``.
        """
        fmspc = fmspc.lower()
        if len(fmspc) != 12 or any(c not in "0123456789abcdef" for c in fmspc):
            raise CollateralError(f"FMSPC {fmspc!r} is not 6 bytes of hex")
        if pck_ca not in ("processor", "platform"):
            raise CollateralError(f"PCK CA {pck_ca!r} is neither 'processor' nor 'platform'")
        tcb_url = self._url("/tcb", fmspc=fmspc)
        tcb = self._fetch(tcb_url, "tcbInfo")
        qe_url = self._url("/qe/identity")
        qe = self._fetch(qe_url, "enclaveIdentity")
        pck_crl = self._fetch(self._url("/pckcrl", ca=pck_ca, encoding="der"), "crl")
        return Collateral(
            tcb_info=tcb.body,
            qe_identity=qe.body,
            tcb_info_issuer_chain=self._chain(
                tcb, _TCB_CHAIN_HEADER, tcb_url, _TCB_CHAIN_HEADER_V3
            ),
            qe_identity_issuer_chain=self._chain(qe, _QE_CHAIN_HEADER, qe_url),
            pck_crl=pck_crl.body,
            root_ca_crl=self._root_ca_crl(),
        )
