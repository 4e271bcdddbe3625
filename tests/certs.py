"""Self-signed certificates the tests need: PEM files for their own TLS servers, and hand-made
certificates carrying chosen extensions (to feed the RA-TLS reader what the product never builds).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


def self_signed_pem(
    directory: Path,
    stem: str,
    *,
    common_name: str = "localhost",
    dns: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
) -> tuple[Path, Path]:
    """Write ``<stem>.pem`` (a CA:TRUE self-signed P-256 certificate, usable with
    ``curl --cacert``) and ``<stem>-key.pem`` (0600) in ``directory``; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{stem}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{stem}-key.pem"
    write_private_key(key_path, key)
    return cert_path, key_path


def ca_issued_pem(
    directory: Path,
    stem: str,
    ca: tuple[Path, Path],
    *,
    dns: tuple[str, ...] = ("localhost",),
    days: int = 30,
) -> tuple[Path, Path]:
    """Write ``<stem>-fullchain.pem`` (a leaf for ``dns`` issued by ``ca``, then the CA) and
    ``<stem>-key.pem`` (0600): what a CA hands its customer; return their paths."""
    ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
    ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    end = now + dt.timedelta(days=days)
    # A negative ``days`` makes one that expired: it was valid for the day before.
    start = min(now - dt.timedelta(minutes=5), end - dt.timedelta(days=1))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    chain_path = directory / f"{stem}-fullchain.pem"
    chain_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca[0].read_bytes())
    key_path = directory / f"{stem}-key.pem"
    write_private_key(key_path, key)
    return chain_path, key_path


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PKCS#8 PEM, created 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def with_extensions(
    key: CertificateIssuerPrivateKeyTypes,
    extensions: list[tuple[str, bytes]],
    *,
    critical: frozenset[str] = frozenset(),
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> x509.Certificate:
    """A self-signed end-entity certificate with each (OID, raw value) as an extension, critical
    when its OID is in ``critical``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RATLS")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
            critical=oid in critical,
        )
    return builder.sign(key, hash_algorithm or hashes.SHA256())


def bad_trust_roots() -> dict[str, x509.Certificate]:
    """Certificates that must not be accepted as a (simulation) trust root, by what is wrong:
    each is otherwise a good root (named "bad root", valid now)."""
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad root")])

    def build(
        key: CertificateIssuerPrivateKeyTypes,
        *,
        ca: bool = True,
        signer: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer or key, hashes.SHA256())
        )

    from cryptography.hazmat.primitives.asymmetric import rsa

    p256 = ec.generate_private_key(ec.SECP256R1())
    return {
        "not a CA": build(p256, ca=False),
        "RSA": build(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "P-384": build(ec.generate_private_key(ec.SECP384R1())),
        "not self-signed": build(p256, signer=ec.generate_private_key(ec.SECP256R1())),
    }
