"""A throwaway certificate authority for trials: what ``mse-secrets dev-ca`` writes.

Pull provisioning needs a server certificate from the owner's CA (the enclave trusts
``--secrets-server-ca`` and checks that the certificate names the host of ``--secrets-server``),
and ``mse-run --certificate`` needs a CA-issued chain whose leaf names ``--host``. A trial has no
such CA; this makes one with the names a trial on one machine needs, in one step:

* ``ca.pem``: the CA, for ``curl --cacert`` and ``--secrets-server-ca``. Its key is never
  written: every certificate the trial needs is issued here, at once, so nothing can ever mint
  another certificate that chains to a ``ca.pem`` someone may have trusted more widely;
* ``server.pem`` (the server's certificate, then the CA) and ``server.key``: for
  ``mse-secrets serve --cert --key``;
* ``app-fullchain.pem`` (the app's certificate, then the CA) and ``app.key``: for ``mse-run
  --certificate`` and ``mse-secrets push|serve --tls-key``. A key of its own, not the server's:
  it is handed to the enclave, which must not be able to pose as the secrets server.

Both leaves carry every name (DNS names as DNS, addresses as IP subjectAltNames: inside Gramine
``localhost`` may not resolve, so a trial under ``--direct`` reaches the server by address). Every
subject says :data:`TRIAL_MARK`, and the CA expires soon (:data:`DEFAULT_DAYS`). Keys are EC
P-256, written 0600 from the start; nothing existing is ever replaced.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mse_base._internal.files import private_key_pem, write_atomic, write_private
from mse_base._internal.utc import iso
from mse_base.errors import UsageError

TRIAL_MARK = "MSE DEV CA — FOR TRIALS ONLY"
DEFAULT_NAMES = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 30
# Longer-lived is no longer a trial: such a deployment deserves its own CA.
MAX_DAYS = 365
MAX_NAMES = 32
# Back-date notBefore a little so a verifier whose clock lags ours still accepts.
_CLOCK_SKEW = dt.timedelta(minutes=5)

CA_CERT = "ca.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
APP_CHAIN = "app-fullchain.pem"
APP_KEY = "app.key"
FILES = (CA_CERT, SERVER_CERT, SERVER_KEY, APP_CHAIN, APP_KEY)


@dataclass(frozen=True)
class DevCA:
    """What :func:`create` wrote: the files in ``directory``, for ``names``, until ``not_after``."""

    directory: Path
    names: tuple[str, ...]
    not_after: dt.datetime

    def path(self, name: str) -> Path:
        return self.directory / name

    def summary(self) -> str:
        """What was written, what each file is for, and the commands that use them."""

        def path(name: str) -> str:
            return shlex.quote(str(self.path(name)))

        # The app is reached by name; the secrets server by address where there is one, since
        # inside Gramine (--direct, SGX) a name such as localhost may not resolve.
        host = next((n for n in self.names if not _is_address(n)), self.names[0])
        server = next((n for n in self.names if _is_address(n)), self.names[0])
        server_url = f"https://{f'[{server}]' if ':' in server else server}:8443"
        app_url = f"https://{f'[{host}]' if ':' in host else host}:PORT"
        width = len(path(APP_CHAIN))
        lines = [
            f"*** FOR TRIALS ONLY: a throwaway CA, valid until {iso(self.not_after)}, for "
            f"{', '.join(self.names)} ***",
            *(
                f"  {path(name):<{width}}  {what}"
                for name, what in (
                    (CA_CERT, "the CA (its key was not kept): --secrets-server-ca, curl --cacert"),
                    (SERVER_CERT, "server certificate, then the CA: mse-secrets serve --cert"),
                    (SERVER_KEY, "its key (0600): mse-secrets serve --key"),
                    (APP_CHAIN, "app certificate, then the CA: mse-run --certificate"),
                    (APP_KEY, "its key (0600): mse-secrets push|serve --tls-key"),
                )
            ),
            "next, pull (start the server first):",
            f"  mse-secrets serve --policy policy.toml --cert {path(SERVER_CERT)} "
            f"--key {path(SERVER_KEY)} --port 8443 [--tls-key {path(APP_KEY)}] ...",
            f"  mse-run ... --provision pull --secrets-server {server_url} "
            f"--secrets-server-ca {path(CA_CERT)} [--host {host} --certificate {path(APP_CHAIN)}]",
            "or push the key of the app's certificate:",
            f"  mse-run ... --host {host} --certificate {path(APP_CHAIN)} --provision push",
            f"  mse-secrets push {app_url} ... --tls-key {path(APP_KEY)}",
            f"then: curl --cacert {path(CA_CERT)} {app_url}/",
        ]
        return "\n".join(lines)


def create(
    directory: Path,
    names: Sequence[str],
    days: int = DEFAULT_DAYS,
    *,
    now: dt.datetime | None = None,
) -> DevCA:
    """Write a new CA and its two leaves for ``names`` (canonical DNS names or addresses).

    Refused (:class:`UsageError`, nothing written) when ``directory`` already holds any of
    :data:`FILES`; a write that fails part-way removes what it wrote.
    """
    if not names or len(names) > MAX_NAMES:
        raise UsageError(f"--name: give 1 to {MAX_NAMES} names")
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(
            f"--days {days}: give 1 to {MAX_DAYS} days; a dev CA is for trials, a longer-lived "
            "deployment needs its own CA"
        )
    _check_free(directory)
    now = now or dt.datetime.now(dt.timezone.utc)
    not_after = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_certificate(ca_key, now, not_after)
    server_key = ec.generate_private_key(ec.SECP256R1())
    app_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = {
        CA_CERT: (ca_pem, 0o644),
        SERVER_KEY: (private_key_pem(server_key), 0o600),
        SERVER_CERT: (
            _leaf_pem(ca, ca_key, server_key, names, "mse-secrets serve", now) + ca_pem,
            0o644,
        ),
        APP_KEY: (private_key_pem(app_key), 0o600),
        APP_CHAIN: (
            _leaf_pem(ca, ca_key, app_key, names, "mse-run --certificate", now) + ca_pem,
            0o644,
        ),
    }
    _write_all(directory, files)
    return DevCA(directory, tuple(names), not_after)


def _check_free(directory: Path) -> None:
    if os.path.lexists(directory) and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory; give a new directory for the dev CA")
    taken = [name for name in FILES if os.path.lexists(directory / name)]
    if taken:
        # A CA is made once: another run's ca.pem may already be measured into an enclave.
        raise UsageError(
            f"{directory} already holds {', '.join(taken)}; give a new directory (a dev CA is "
            "never replaced)"
        )


def _write_all(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    written: list[Path] = []
    try:
        # 0700: it holds the keys, and a user may widen it knowingly, not by default.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, (data, mode) in files.items():
            path = directory / name
            if mode == 0o600:
                write_private(path, data)
            else:
                write_atomic(path, data, mode)
            written.append(path)
    except OSError as err:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(
            f"cannot write the dev CA in {directory}: {err.strerror or err}; give a writable "
            "directory"
        ) from None


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRIAL_MARK),
    ]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(attributes)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    subject = _name("MSE dev CA (trials only)")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _leaf_pem(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    unit: str,
    now: dt.datetime,
) -> bytes:
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0], unit))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
