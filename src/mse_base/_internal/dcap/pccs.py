"""Collateral over HTTP(S) from Intel PCS or a PCCS (API v4), with an on-disk cache.

Endpoints (Intel "Provisioning Certification Service for ECDSA Attestation", API v4, and the
PCCS that mirrors it), relative to ``{base}/sgx/certification/v4``:

* ``GET /tcb?fmspc=<hex>``: TCB info JSON; issuer chain in ``TCB-Info-Issuer-Chain``;
* ``GET /qe/identity``: QE identity JSON; issuer chain in ``SGX-Enclave-Identity-Issuer-Chain``;
* ``GET /pckcrl?ca=processor|platform&encoding=der``: the PCK CA CRL; issuer chain (PCK CA,
  root) in ``SGX-PCK-CRL-Issuer-Chain`` (used only to vet the CRL before caching it: the
  verifier takes the PCK CA from the quote);
* ``GET /rootcacrl``: the Intel SGX Root CA CRL. PCCS serves it (hex-encoded DER text in the
  PCCS releases we know, DER elsewhere); Intel PCS itself does not, so on 404 we fall back to
  the CRL distribution point written in the trust root certificate.

Issuer chains arrive URL-encoded (percent-encoded PEM). A CRL body may be DER or hex text; both
are accepted.

Cache: ``$XDG_CACHE_HOME/mse/collateral/``, one file per URL. A response is stored only after
this module has verified it under the trust root (signature and issuer chain; the same building
blocks the verifier uses), so a broken or forged answer is handed to the verifier (which rejects
it with its precise message) but never outlives the request. A stored item is reused until the
``nextUpdate`` of the verified document or 24 hours after it was fetched, whichever comes first.
The cache only saves requests: everything read from it is verified again by the verifier exactly
like a fresh response. A cache directory that another user could write to is not used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import secrets
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mse_base._internal.dcap import chain
from mse_base._internal.dcap.collateral import (
    MAX_DOCUMENT_SIZE,
    Collateral,
    parse_qe_identity,
    parse_tcb_info,
    verified_signed_text,
)
from mse_base._internal.dcap.errors import CollateralError
from mse_base._internal.files import read_limited, size_text
from mse_base._internal.utc import ISO_SECONDS, iso
from mse_base.errors import VerificationError

__all__ = ["INTEL_PCS_URL", "PCCSCollateralSource", "collateral_cache_dir"]

logger = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
_API = "/sgx/certification/v4"
_TCB_CHAIN_HEADER = "TCB-Info-Issuer-Chain"
# What API v3 and older PCCS releases call the same header.
_TCB_CHAIN_HEADER_V3 = "SGX-TCB-Info-Issuer-Chain"
_QE_CHAIN_HEADER = "SGX-Enclave-Identity-Issuer-Chain"
_PCK_CRL_CHAIN_HEADER = "SGX-PCK-CRL-Issuer-Chain"
_KEPT_HEADERS = (_TCB_CHAIN_HEADER, _TCB_CHAIN_HEADER_V3, _QE_CHAIN_HEADER, _PCK_CRL_CHAIN_HEADER)
# Collateral bodies are a few kB; refuse anything absurd rather than buffer it (the same cap as
# a collateral file on disk: what a PCCS served can always be saved and loaded as a directory).
_MAX_BODY = MAX_DOCUMENT_SIZE
# A cache entry is the body in base64 plus a few short fields.
_MAX_ENTRY = 2 * _MAX_BODY
# Overall time for one request (connection, redirects, headers and body), not per socket read:
# a server sending a byte at a time must not hold the client.
_TIMEOUT = 30.0
# Upper bound on how long a cached item is reused, whatever its nextUpdate says. Intel signs TCB
# info and CRLs for about a month, so nextUpdate alone would hide a new revocation or a TCB
# recovery for weeks; Intel's QCNL caches for 168 h by default, we choose 24 h so that they are
# seen within a day, at the cost of four small requests a day.
_CACHE_LIFETIME = dt.timedelta(hours=24)


def collateral_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mse/collateral`` (XDG default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "mse" / "collateral"


def _printable(text: str, limit: int = 200) -> str:
    """Server-chosen text made safe for one error line (no terminal escapes, no line breaks)."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _HTTPStatusError(CollateralError):
    """The service answered with an HTTP error status."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(
            f"collateral request {_printable(url)} failed: HTTP {status} {_printable(reason)}",
            check="collateral.unavailable",
        )
        self.status = status


class _RedirectRefused(CollateralError):
    """The service redirected an https:// request to another scheme."""


@dataclass(frozen=True)
class _Response:
    body: bytes
    headers: Mapping[str, str]


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, ISO_SECONDS).replace(tzinfo=dt.timezone.utc)


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
    raise CollateralError(
        f"{_printable(url)} did not return a CRL (neither DER, hex nor PEM)",
        check="collateral.unavailable",
    )


def _crl_distribution_point(root: x509.Certificate) -> str | None:
    """The first URI among the trust root's CRL distribution points."""
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    return None


# The chain a PCK CRL is served with: a defect means the CRL's signature cannot be trusted.
_PCK_CRL_ISSUER = chain.ChainChecks(
    chain.PCK_CRL.signature, chain.PCK_CRL.signature, chain.PCK_CRL.signature
)


# --- vetting a response before it is cached ---------------------------------------------------
# The same checks, built from the same blocks (chain, collateral), as the verifier's signature
# checks of the collateral; they could move to a module shared with verify/verifier.py. Time
# windows are left to the verifier, which knows the verification time.


def _issuer_chain_pem(response: _Response, what: str, *headers: str) -> bytes:
    """The issuer chain the service sent in the first of ``headers`` present (URL-encoded PEM)."""
    value = next((response.headers[h] for h in headers if response.headers.get(h)), None)
    if not value:
        raise CollateralError(
            f"{what}: the service sent no {headers[0]} header (the issuer chain)",
            check="collateral.unavailable",
        )
    return urllib.parse.unquote(value).encode()


def _vetted_signed_json(
    response: _Response, key: str, root: x509.Certificate, *headers: str
) -> bytes:
    """The signed text of a JSON body whose signature verifies under an issuer chain to ``root``."""
    what = f"{key} issuer chain"
    signer = chain.issuer_under_root(
        _issuer_chain_pem(response, key, *headers),
        root,
        what,
        "TCB signing certificate",
        chain.SIGNING_CHAIN,
        ca=False,
    )
    return verified_signed_text(response.body, key, signer)


def _vetted_tcb_info(response: _Response, root: x509.Certificate, fmspc: str) -> dt.datetime:
    text = _vetted_signed_json(response, "tcbInfo", root, _TCB_CHAIN_HEADER, _TCB_CHAIN_HEADER_V3)
    info = parse_tcb_info(text)
    # A well-signed TCB info for another platform would be rejected at every use.
    if info.fmspc.hex() != fmspc:
        raise CollateralError(f"tcbInfo: not for FMSPC {fmspc}", check="collateral.platform")
    return info.next_update


def _vetted_qe_identity(response: _Response, root: x509.Certificate) -> dt.datetime:
    text = _vetted_signed_json(response, "enclaveIdentity", root, _QE_CHAIN_HEADER)
    return parse_qe_identity(text).next_update


def _vetted_pck_crl(response: _Response, root: x509.Certificate, pck_ca: str) -> dt.datetime:
    pem = _issuer_chain_pem(response, "PCK CRL", _PCK_CRL_CHAIN_HEADER)
    ca = chain.issuer_under_root(
        pem, root, "PCK CRL issuer chain", "PCK CA", _PCK_CRL_ISSUER, ca=True
    )
    names = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not any(pck_ca in str(name.value).lower() for name in names):
        raise CollateralError(
            f"PCK CRL: issued by {ca.subject.rfc4514_string()}, not the {pck_ca} CA",
            check=chain.PCK_CRL.signature,
        )
    return _vetted_crl(response.body, ca, "PCK CRL", chain.PCK_CRL)


def _vetted_crl(
    der: bytes, issuer: x509.Certificate, what: str, checks: chain.CrlChecks
) -> dt.datetime:
    crl = chain.load_crl(der, what, checks)
    chain.check_crl_signed_by(crl, issuer, what, checks)
    if crl.next_update_utc is None:
        raise CollateralError(f"{what}: has no nextUpdate", check=checks.format)
    return crl.next_update_utc


# --- transport ---------------------------------------------------------------------------------


class _Deadline:
    """Shuts the sockets of one request down once its overall time is up.

    Socket timeouts only bound each read. The watchdog keeps a duplicate of each connection's
    descriptor, so it can shut the connection down from its own thread (also mid TLS handshake)
    without racing the owner's close and hitting a reused descriptor.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the request deadline has passed")
            self._fds.append(os.dup(sock.fileno()))

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    dup = socket.socket(fileno=fd)
                    try:
                        dup.shutdown(socket.SHUT_RDWR)
                    finally:
                        dup.detach()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()


def _watched(http_class: Any, deadline: _Deadline) -> Callable[..., http.client.HTTPConnection]:
    """``http_class`` whose TCP sockets are registered with ``deadline`` once connected."""

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection = http_class(host, **kwargs)
        # http.client opens every socket (also the one under TLS, also through a proxy) with
        # this instance attribute; it has no public hook for it. Should a later Python drop it,
        # requests still work, bounded by the per-read socket timeout only.
        create = getattr(conn, "_create_connection", None)
        if create is None:
            return conn

        def connect(*args: Any, **kw: Any) -> socket.socket:
            sock: socket.socket = create(*args, **kw)
            deadline.watch(sock)
            return sock

        conn._create_connection = connect  # type: ignore[attr-defined]
        return conn

    return make


class _WatchedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """urllib's http:// and https:// handlers in one, every connection watched by ``deadline``.

    Both http_open and https_open end in do_open, so one override serves both schemes. Being an
    instance of both classes is what makes build_opener leave out its own unwatched defaults.
    """

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_watched(http_class, self._deadline), req, **kwargs)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https:// to anything else (urllib would go to http)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            fp.close()
            raise _RedirectRefused(
                f"collateral request {_printable(req.full_url)} was redirected to "
                f"{_printable(newurl)}; refusing to leave https://",
                check="collateral.unavailable",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_body(reply: http.client.HTTPResponse) -> bytes:
    """The body, at most ``_MAX_BODY + 1`` bytes; one cut short of its Content-Length raises.

    ``read(amt)`` alone returns a truncated body without complaint when the server closes early.
    """
    body = bytearray()
    while len(body) <= _MAX_BODY:
        chunk = reply.read(min(1 << 16, _MAX_BODY + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) <= _MAX_BODY and reply.length:
        raise http.client.IncompleteRead(bytes(body), reply.length)
    return bytes(body)


# --- the source --------------------------------------------------------------------------------


class PCCSCollateralSource:
    """A :class:`~mse_base._internal.dcap.collateral.CollateralSource` backed by PCS / a PCCS.

    ``base_url`` is the service root, e.g. ``https://api.trustedservices.intel.com`` or
    ``https://pccs.example:8081``; the ``.../sgx/certification/v4/`` form that Intel's QCNL
    configuration uses is accepted too; ``http://`` works but logs a warning. ``cache_dir``
    defaults to :func:`collateral_cache_dir`; ``use_cache=False`` disables the cache.
    ``timeout`` bounds each request as a whole. ``trust_root`` is the root a response must chain
    to before it is cached (default the Intel SGX Root CA, all that PCS and PCCS serve; the
    simulation CA for simulated collateral). ``now`` is the clock of the cache lifetime.
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        timeout: float = _TIMEOUT,
        root_ca_crl_url: str | None = None,
        trust_root: x509.Certificate | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"collateral service URL {base_url!r} must be http(s)://host[:port]")
        if parsed.scheme == "http":
            logger.warning(
                "collateral service %s is plain http://: anyone on the path can change or block "
                "its answers (signatures are still checked); prefer https://",
                _printable(base_url),
            )
        base = base_url.rstrip("/")
        for version in ("/v3", "/v4"):
            base = base.removesuffix("/sgx/certification" + version)
        self._base = base
        self._cache = (cache_dir or collateral_cache_dir()) if use_cache else None
        self._timeout = timeout
        self._root_ca_crl_url = root_ca_crl_url
        if trust_root is not None:
            chain.check_trust_root(trust_root)  # its key names the cache entries
        self._root = trust_root if trust_root is not None else chain.intel_sgx_root()
        self._now = now
        #: Number of HTTP requests made (the cache tests read it).
        self.requests_made = 0

    # -- cache ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cache_dir(self, *, create: bool) -> Iterator[int | None]:
        """A descriptor of the cache directory, if it exists (or ``create``) and is private.

        Entries are then opened relative to the checked descriptor, so swapping the directory
        after the check changes nothing.
        """
        if self._cache is None:
            yield None
            return
        try:
            if create:
                self._cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._cache, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            yield None
            return
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                # Another user able to write here could plant entries; the verifier would
                # reject them, but each would block verification until it expired.
                logger.warning(
                    "not using the collateral cache %s: it is not owned by you or is writable "
                    "by others; run chmod go-w on it or set XDG_CACHE_HOME to a private directory",
                    self._cache,
                )
                self._cache = None
                yield None
            else:
                yield fd
        finally:
            os.close(fd)

    def _entry_name(self, url: str) -> str:
        # Keyed by the root the entry was vetted under too: a source trusting another root
        # (the simulation CA, say) must not be served it, nor block it.
        key = chain.spki_sha256(self._root) + " " + url
        return hashlib.sha256(key.encode()).hexdigest() + ".json"

    def _cached(self, url: str, now: dt.datetime) -> _Response | None:
        with self._cache_dir(create=False) as directory:
            if directory is None:
                return None
            try:
                raw = read_limited(
                    self._entry_name(url), _MAX_ENTRY, nofollow=True, dir_fd=directory
                )
            except OSError:
                # Missing, not a regular file (a FIFO there must not block us), or too large:
                # a miss either way.
                return None
        return _decode_entry(raw, url, now)

    def _store(
        self, url: str, response: _Response, fetched_at: dt.datetime, next_update: dt.datetime
    ) -> None:
        entry = {
            "url": url,
            "fetched_at": iso(fetched_at),
            "next_update": iso(next_update),
            "headers": dict(response.headers),
            "body": base64.b64encode(response.body).decode(),
        }
        name = self._entry_name(url)
        tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        # A failed cache write only costs a request next time; never fail verification for it.
        with self._cache_dir(create=True) as directory, contextlib.suppress(OSError):
            if directory is None:
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600, dir_fd=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(json.dumps(entry).encode())
                os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=directory)
                raise

    # -- HTTP ----------------------------------------------------------------------------------

    def _get(self, url: str) -> _Response:
        request = urllib.request.Request(url, headers={"Accept": "*/*"})  # noqa: S310
        self.requests_made += 1
        shown = _printable(url)
        with _Deadline(self._timeout) as deadline:
            opener = urllib.request.build_opener(_WatchedHandler(deadline), _RedirectHandler())
            try:
                with opener.open(request, timeout=self._timeout) as reply:
                    body = _read_body(reply)
                    headers = {
                        name: reply.headers[name] for name in _KEPT_HEADERS if name in reply.headers
                    }
            except urllib.error.HTTPError as err:
                if deadline.expired:
                    raise self._timed_out(shown) from None
                raise _HTTPStatusError(url, err.code, str(err.reason)) from None
            except (urllib.error.URLError, OSError) as err:
                if deadline.expired:
                    raise self._timed_out(shown) from None
                reason = _printable(str(getattr(err, "reason", err)))
                raise CollateralError(
                    f"cannot reach the collateral service at {shown}: {reason}; check --pccs-url "
                    "or pass --collateral DIR",
                    check="collateral.unavailable",
                ) from None
            except (http.client.HTTPException, ValueError) as err:
                # A malformed answer (bad status line, too many or too long headers, a short
                # body, an unusable redirect URL): the service is not speaking HTTP properly.
                if deadline.expired:
                    raise self._timed_out(shown) from None
                text, kind = str(err).strip(), type(err).__name__
                detail = _printable(text if text.startswith(kind) else f"{kind}: {text}")
                raise CollateralError(
                    f"collateral service at {shown} sent an invalid HTTP response ({detail}); "
                    "check --pccs-url or pass --collateral DIR",
                    check="collateral.unavailable",
                ) from None
            # A shut-down connection can also look like a complete (truncated) body.
            if deadline.expired:
                raise self._timed_out(shown)
        if len(body) > _MAX_BODY:
            raise CollateralError(
                f"collateral response from {shown} is larger than {size_text(_MAX_BODY)}, more "
                "than any collateral document; check --pccs-url or pass --collateral DIR",
                check="collateral.unavailable",
            )
        return _Response(body, headers)

    def _timed_out(self, shown: str) -> CollateralError:
        return CollateralError(
            f"collateral service at {shown} did not answer within {self._timeout:g} s; check "
            "--pccs-url or pass --collateral DIR",
            check="collateral.unavailable",
        )

    def _fetch(
        self, url: str, vet: Callable[[_Response], dt.datetime], *, crl: bool = False
    ) -> _Response:
        """GET ``url`` via the cache; ``vet`` checks a fresh answer and returns its nextUpdate.

        A fresh answer that fails ``vet`` is returned as is, for the verifier to reject with its
        own message, and not cached: a transient fault must not outlive the request.
        """
        now = self._now()
        cached = self._cached(url, now)
        if cached is not None:
            return cached
        response = self._get(url)
        if crl:
            response = _Response(_crl_der(response.body, url), response.headers)
        try:
            next_update = vet(response)
        except VerificationError as exc:
            logger.debug("not caching %s: %s", _printable(url), exc)
            return response
        if next_update > now:
            self._store(url, response, now, next_update)
        return response

    # -- the endpoints ------------------------------------------------------------------------

    def _url(self, path: str, **query: str) -> str:
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{self._base}{_API}{path}{suffix}"

    def _vet_root_crl(self, response: _Response) -> dt.datetime:
        return _vetted_crl(response.body, self._root, "root CA CRL", chain.ROOT_CA_CRL)

    def _root_ca_crl(self) -> bytes:
        url = self._url("/rootcacrl")
        fallback = self._root_ca_crl_url or _crl_distribution_point(self._root)
        # Intel PCS has no /rootcacrl (404): the CRL then came from the fallback, and asking
        # /rootcacrl again on every verification would cost a request each time.
        now = self._now()
        for candidate in (url, fallback):
            cached = self._cached(candidate, now) if candidate is not None else None
            if cached is not None:
                return cached.body
        try:
            return self._fetch(url, self._vet_root_crl, crl=True).body
        except _HTTPStatusError as err:
            if fallback is None or err.status != 404:
                raise
            return self._fetch(fallback, self._vet_root_crl, crl=True).body

    def collateral_for(self, *, fmspc: str, pck_ca: str, at: dt.datetime) -> Collateral:
        """Fetch (or reuse) the collateral for ``fmspc`` whose PCK leaf ``pck_ca`` issued.

        ``at`` is not sent: the service only serves current collateral, and the verifier checks
        its validity at ``at``.
        """
        fmspc = fmspc.lower()
        if len(fmspc) != 12 or any(c not in "0123456789abcdef" for c in fmspc):
            raise CollateralError(
                f"FMSPC {fmspc!r} is not 6 bytes of hex", check="collateral.unavailable"
            )
        if pck_ca not in ("processor", "platform"):
            raise CollateralError(
                f"PCK CA {pck_ca!r} is neither 'processor' nor 'platform'",
                check="collateral.unavailable",
            )
        root = self._root
        tcb_url = self._url("/tcb", fmspc=fmspc)
        tcb = self._fetch(tcb_url, lambda r: _vetted_tcb_info(r, root, fmspc))
        qe_url = self._url("/qe/identity")
        qe = self._fetch(qe_url, lambda r: _vetted_qe_identity(r, root))
        pck_crl = self._fetch(
            self._url("/pckcrl", ca=pck_ca, encoding="der"),
            lambda r: _vetted_pck_crl(r, root, pck_ca),
            crl=True,
        )
        return Collateral(
            tcb_info=tcb.body,
            qe_identity=qe.body,
            tcb_info_issuer_chain=_issuer_chain_pem(
                tcb, "tcbInfo", _TCB_CHAIN_HEADER, _TCB_CHAIN_HEADER_V3
            ),
            qe_identity_issuer_chain=_issuer_chain_pem(qe, "enclaveIdentity", _QE_CHAIN_HEADER),
            pck_crl=pck_crl.body,
            root_ca_crl=self._root_ca_crl(),
        )


def _decode_entry(raw: bytes, url: str, now: dt.datetime) -> _Response | None:
    """A cache entry's response if well-formed, for ``url`` and fresh at ``now``; else a miss.

    Entries are plain files a user can edit, so every field is type-checked.
    """
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("url") != url:
        return None
    fetched_at, next_update = entry.get("fetched_at"), entry.get("next_update")
    headers, body = entry.get("headers"), entry.get("body")
    if not (
        isinstance(fetched_at, str)
        and isinstance(next_update, str)
        and isinstance(body, str)
        and isinstance(headers, dict)
        and all(k in _KEPT_HEADERS and isinstance(v, str) for k, v in headers.items())
    ):
        return None
    try:
        fetched, expires = _parse_time(fetched_at), _parse_time(next_update)
        data = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return None
    # An entry from the future (clock set back, or edited) is not trusted to be recent.
    if not fetched <= now < min(expires, fetched + _CACHE_LIFETIME):
        return None
    return _Response(data, dict(headers))
