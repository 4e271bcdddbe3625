"""What one ``mse-run`` deploys: the checked parameters shared by mse-run and the bootstrap.

Everything but the listening address is measured: it becomes the enclave's argv
(:meth:`Deployment.bootstrap_args`). The port and bind address reach the enclave unmeasured, in
two environment variables the manifest lets Gramine pass through from the host
(:data:`LISTEN_VARIABLES`), so every replica of a release has one MRENCLAVE whatever port it
serves on. That gives the host nothing it lacked: it controls the network, and so where the
enclave's packets go, anyway. What clients check is measured: the host name (the certificate's
SAN), the certificate and the quote that binds it. The bootstrap reads the two variables
strictly (:func:`listen_from_environment`) before it does anything else.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from mse_base.errors import UsageError

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
#: ``module:attribute``, both dotted paths of identifiers; the one rule for mse-run (which
#: measures the argv) and the bootstrap (which imports it).
APPLICATION_SPEC = re.compile(
    rf"(?P<module>{_IDENTIFIER}(?:\.{_IDENTIFIER})*):(?P<attr>{_IDENTIFIER}(?:\.{_IDENTIFIER})*)"
)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def parse_application(text: str) -> str:
    if not APPLICATION_SPEC.fullmatch(text):
        raise UsageError(
            f"--application {text!r} is not of the form module:attribute (for example app:app)"
        )
    return text


def parse_host(text: str) -> str:
    """A DNS name or IP address that clients use: the certificate's SAN and CN."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise UsageError(
            f"--host {text!r} is neither a DNS name nor an IP address: give the name clients "
            "connect to, such as localhost or app.example.com"
        )
    return name.lower()


#: The attribute types ``--subject`` may hold: the keywords RFC 4514 section 3 defines (also
#: when written as their OIDs). Others are refused: ``serialNumber`` carries the deployment UUID
#: (``ratls.build_certificate``), and cryptography takes any other dotted OID's value as UTF-8
#: text, whatever its real syntax.
SUBJECT_KEYWORDS = ("CN", "L", "ST", "O", "OU", "C", "STREET", "DC", "UID")
MAX_SUBJECT_BYTES = 1024
MAX_SANS = 32
_SUBJECT_EXAMPLE = "CN=app.example.com,O=Example Corp"
_COUNTRY = re.compile(r"[A-Z]{2}")


def parse_subject(text: str) -> str:
    """The RFC 4514 distinguished name ``--subject`` gives the self-signed certificate, in the
    canonical form ``cryptography`` writes back (so the same name always gives the same argv).
    """
    import unicodedata

    from cryptography.x509.oid import NameOID

    keywords = {
        NameOID.COMMON_NAME: "CN",
        NameOID.LOCALITY_NAME: "L",
        NameOID.STATE_OR_PROVINCE_NAME: "ST",
        NameOID.ORGANIZATION_NAME: "O",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
        NameOID.COUNTRY_NAME: "C",
        NameOID.STREET_ADDRESS: "STREET",
        NameOID.DOMAIN_COMPONENT: "DC",
        NameOID.USER_ID: "UID",
    }
    shown = repr(text if len(text) <= 80 else text[:77] + "...")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SUBJECT_BYTES:
        raise UsageError(f"--subject is {size} bytes long: at most {MAX_SUBJECT_BYTES}")
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as err:
        # The parser's own messages are empty but for attribute lengths ("must be >= 1 ...").
        reason = f" ({err})" if str(err) else ""
        raise UsageError(
            f"--subject {shown} is not an RFC 4514 distinguished name{reason}: write "
            f"TYPE=value pairs joined by commas with no spaces around them, TYPE one of "
            f"{', '.join(SUBJECT_KEYWORDS)}; e.g. {_SUBJECT_EXAMPLE}"
        ) from None
    if not len(name):
        raise UsageError(
            f"--subject is empty: give at least one attribute, e.g. {_SUBJECT_EXAMPLE}"
        )
    for attribute in name:
        keyword = keywords.get(attribute.oid)
        value = attribute.value
        if keyword is None:
            raise UsageError(
                f"--subject {shown}: attribute type {attribute.oid.dotted_string} is not "
                f"accepted; use {', '.join(SUBJECT_KEYWORDS)}"
            )
        if not isinstance(value, str) or not value:
            raise UsageError(
                f"--subject {shown}: {keyword} is empty; give it a value or leave it out"
            )
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise UsageError(f"--subject {shown}: {keyword} holds a control character")
        # C is a PrintableString, DC an IA5String: cryptography would encode other text in them
        # as invalid DER rather than refuse it.
        if keyword == "C" and not _COUNTRY.fullmatch(value):
            raise UsageError(f"--subject {shown}: C is a two-letter country code, such as C=FR")
        if keyword == "DC" and not _LABEL.match(value):
            raise UsageError(f"--subject {shown}: DC is one DNS label, such as DC=example")
    canonical = name.rfc4514_string()
    if x509.Name.from_rfc4514_string(canonical) != name:  # fail closed on a lossy text form
        raise UsageError(f"--subject {shown} has no canonical RFC 4514 form; simplify it")
    return canonical


def parse_sans(texts: Sequence[str], host: str) -> tuple[str, ...]:
    """The ``--san`` names, each checked as ``--host`` is, in canonical form, in the order given,
    without duplicates or ``host`` (the certificate's first SAN already)."""
    if len(texts) > MAX_SANS:
        raise UsageError(f"--san is given {len(texts)} times: at most {MAX_SANS} names")
    names: list[str] = []
    for text in texts:
        try:
            name = parse_host(text)
        except UsageError:
            raise UsageError(
                f"--san {text!r} is neither a DNS name nor an IP address: give another name "
                "clients connect to, such as app.example.com or 10.0.0.5"
            ) from None
        if name != host and name not in names:
            names.append(name)
    return tuple(names)


def parse_uuid(text: str) -> uuid.UUID:
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise UsageError(
            f"--uuid {text!r} is not a UUID: generate one with `python3 -c 'import uuid; "
            "print(uuid.uuid4())'`"
        ) from None
    if str(value) != text.lower():
        raise UsageError(f"--uuid {text!r}: write the UUID in its canonical form, {value}")
    return value


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    try:
        epoch = int(text)
    except ValueError:
        raise UsageError(
            f"--self-signed {text!r} is not a Unix time: give the certificate's expiry in "
            "seconds since 1970, such as $(date -d '+30 days' +%s)"
        ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        expiry = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise UsageError(f"--self-signed {text} is out of range for a date") from None
    if expiry <= now:
        raise UsageError(
            f"--self-signed {text} ({expiry:%Y-%m-%d %H:%M:%S}Z) is in the past: "
            "give a future expiry"
        )
    if expiry.year > 9999:
        raise UsageError(f"--self-signed {text} is beyond year 9999")
    return expiry


def parse_port(text: str | int) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {text!r} must be a TCP port number between 1 and 65535")
    return port


def parse_bind(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    # A scope (fe80::1%eth0) names an interface, which the enclave cannot look up.
    if address is None or "%" in text:
        raise UsageError(
            f"--bind {text!r} is not an IP address: use 0.0.0.0 (all interfaces) or 127.0.0.1"
        )
    return str(address)


#: The enclave's environment variables for the port and bind address: passed through from the
#: host by Gramine (``loader.env.NAME = { passthrough = true }``), so not measured.
PORT_VARIABLE = "MSE_PORT"
BIND_VARIABLE = "MSE_BIND"
LISTEN_VARIABLES = (PORT_VARIABLE, BIND_VARIABLE)
#: What the enclave serves on when the host sets neither (mse-run always sets both), and
#: mse-run's defaults in SGX: the image's, reachable through the container's published port.
DEFAULT_PORT = 443
DEFAULT_BIND = "0.0.0.0"  # noqa: S104 - in SGX the host's network decides who reaches it
#: mse-run's default bind without SGX (--simulation, --direct): nothing isolates those enclaves
#: and their quotes are simulated, so they serve this machine only unless --bind says otherwise.
LOCAL_BIND = "127.0.0.1"
# Decimal digits only, no sign, space, underscore or leading zero: int() would take all of them.
_DECIMAL_PORT = re.compile(r"[1-9][0-9]{0,4}")


def _shown(value: str) -> str:
    """A host-set value for an error line: quoted, escaped and cut short."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def listen_from_environment(environ: Mapping[str, str]) -> tuple[str, int]:
    """The bind address and port the host set for the enclave, checked; the defaults if unset.

    Strict, as for any input from the host: a port is 1 to 65535 in decimal digits, an address
    a literal IPv4 or IPv6 address (no name, which would need a lookup the host answers).
    """
    port = DEFAULT_PORT
    port_text = environ.get(PORT_VARIABLE)
    if port_text is not None:
        if not _DECIMAL_PORT.fullmatch(port_text) or int(port_text) > 65535:
            raise UsageError(
                f"{PORT_VARIABLE}={_shown(port_text)} is not a TCP port: give 1 to 65535 in "
                "decimal digits, with no sign or leading zero (mse-run sets it from --port)"
            )
        port = int(port_text)
    bind = DEFAULT_BIND
    bind_text = environ.get(BIND_VARIABLE)
    if bind_text is not None:
        try:
            bind = parse_bind(bind_text)
        except UsageError:
            raise UsageError(
                f"{BIND_VARIABLE}={_shown(bind_text)} is not an IP address: give a literal IPv4 "
                "or IPv6 address such as 0.0.0.0 or 127.0.0.1 (mse-run sets it from --bind)"
            ) from None
    return bind, port


PROVISION_MODES = ("push", "pull")
#: mse-run's modes: ``sealed`` restarts a push or pull deployment from what it sealed, with the
#: same measured argv (so the same MRENCLAVE, which alone unseals it).
RUN_PROVISION_MODES = (*PROVISION_MODES, "sealed")
DEFAULT_PROVISION_TIMEOUT = 600
_MAX_PROVISION_TIMEOUT = 7 * 24 * 3600


def parse_provision(text: str | None, modes: tuple[str, ...] = PROVISION_MODES) -> str | None:
    if text is not None and text not in modes:
        raise UsageError(f"--provision {text!r}: the provisioning modes are {', '.join(modes)}")
    return text


# A full chain of a few certificates is a few KiB; this leaves room for long ones.
MAX_CERTIFICATE_CHAIN = 64 * 1024


def parse_certificate(
    pem: bytes, where: str, host: str, now: dt.datetime | None = None
) -> tuple[str, dt.datetime]:
    """A CA-issued chain (leaf first) for ``host``, as canonical PEM text, and its expiry."""
    from cryptography.hazmat.primitives import serialization

    if b"PRIVATE KEY-----" in pem:
        raise UsageError(
            f"--certificate {where}: the file holds a private key too: give only the chain; the "
            "key goes to the attested enclave alone (mse-secrets push/serve --tls-key)"
        )
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise UsageError(
            f"--certificate {where}: not PEM certificates; give the full chain, leaf first "
            "(fullchain.pem)"
        ) from None
    leaf = chain[0]
    try:
        leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(
            f"--certificate {where}: the first certificate's key type is not supported here; "
            "use an RSA, EC (P-256, P-384) or Ed25519 key"
        ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    expiry = leaf.not_valid_after_utc
    if expiry <= now or leaf.not_valid_before_utc > now:
        raise UsageError(
            f"--certificate {where}: the first certificate is valid from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {expiry:%Y-%m-%d}, not now: renew it"
        )
    if not _names_host(leaf, host):
        raise UsageError(
            f"--certificate {where}: the first certificate does not name --host {host} in its "
            "subjectAltName: give the chain issued for that name (leaf first)"
        )
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise UsageError(
                f"--certificate {where}: {child.subject.rfc4514_string()} is not issued by the "
                "certificate after it: order the chain leaf first, each followed by its issuer"
            ) from None
    text = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain)
    return text, expiry


def _names_host(leaf: x509.Certificate, host: str) -> bool:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # RFC 6125 6.4.3: a wildcard stands for exactly one left-most label.
        rest = host.partition(".")[2]
        accepted = {host, f"*.{rest}"} if rest else {host}
        return any(
            name.lower().rstrip(".") in accepted for name in names.get_values_for_type(x509.DNSName)
        )
    return address in names.get_values_for_type(x509.IPAddress)


def parse_secrets_server(text: str) -> str:
    """``https://HOST[:PORT]`` of the owner's secrets server, in one canonical form."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    if parts.scheme != "https" or not parts.hostname or not port or parts.path not in ("", "/"):
        raise UsageError(
            f"--secrets-server {text!r} is not an https://HOST[:PORT] URL of mse-secrets serve"
        )
    return f"https://{parse_host(parts.hostname)}:{port}"


def parse_secrets_server_ca(pem: bytes, where: str) -> str:
    """The CA certificates the enclave trusts for its secrets server, as canonical PEM text."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise UsageError(
            f"--secrets-server-ca {where}: not PEM certificates; give the CA that issued the "
            "certificate of mse-secrets serve"
        ) from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def parse_provision_timeout(text: str | None, provision: str | None) -> int:
    if text is None:
        return DEFAULT_PROVISION_TIMEOUT
    if provision is None:
        raise UsageError("--provision-timeout needs --provision push")
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= _MAX_PROVISION_TIMEOUT:
        raise UsageError(
            f"--provision-timeout {text!r} must be a whole number of seconds, "
            f"1 to {_MAX_PROVISION_TIMEOUT}"
        )
    return seconds


@dataclass(frozen=True)
class Deployment:
    """The parameters of one enclave: all measured (its argv) but ``bind`` and ``port`` (its
    environment)."""

    application: str
    host: str
    deployment_id: uuid.UUID
    expiry: dt.datetime
    bind: str
    port: int
    debug: bool
    # Push provisioning: the app starts only after its owner's one valid request.
    provision: str | None = None
    provision_timeout: int = DEFAULT_PROVISION_TIMEOUT
    # The code directory holds one AES-GCM file, decrypted with the provisioned code key.
    encrypted_code: bool = False
    # Pull provisioning: where the enclave fetches its secrets, and the CA it trusts for it.
    secrets_server: str | None = None
    secrets_server_ca: str | None = None
    # A CA-issued chain (PEM, leaf first) served once its private key is provisioned; the
    # RA-TLS certificate then serves provisioning only.
    certificate: str | None = None
    # The self-signed certificate's subject (RFC 4514, canonical) and its SANs after --host.
    subject: str | None = None
    sans: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.certificate is not None and (self.subject is not None or self.sans):
            raise UsageError(
                "--subject and --san shape the self-signed certificate; with --certificate the "
                "app is served with your CA's, which names itself: leave them out"
            )
        if self.certificate is not None and self.provision is None:
            raise UsageError(
                "--certificate needs --provision push (or pull): its private key reaches the "
                "enclave only after attestation (mse-secrets push/serve --tls-key key.pem)"
            )
        if self.encrypted_code and self.provision is None:
            raise UsageError(
                "--code is encrypted: add --provision push (or pull), so that its key can be "
                "provisioned to the attested enclave (mse-secrets push/serve --code-key FILE)"
            )
        pulling = self.provision == "pull"
        if pulling and (self.secrets_server is None or self.secrets_server_ca is None):
            raise UsageError(
                "--provision pull needs --secrets-server https://HOST:PORT and "
                "--secrets-server-ca ca.pem"
            )
        if not pulling and (self.secrets_server is not None or self.secrets_server_ca is not None):
            raise UsageError("--secrets-server and --secrets-server-ca go with --provision pull")

    def certificate_leaf(self) -> x509.Certificate | None:
        """The first certificate of ``--certificate`` (the chain is leaf first)."""
        if self.certificate is None:
            return None
        return x509.load_pem_x509_certificate(self.certificate.encode("ascii"))

    def measured_options(self) -> list[tuple[str, str | None]]:
        """The bootstrap's options in argv order, as (name, value), value None for a flag.

        The one source of :meth:`bootstrap_args`, and what mse-run records for a sealing run
        (sealing.Measurement), so a later ``--provision sealed`` can name the ones that changed.
        """
        options: list[tuple[str, str | None]] = [
            ("--application", self.application),
            ("--host", self.host),
            ("--uuid", str(self.deployment_id)),
            ("--self-signed", str(int(self.expiry.timestamp()))),
        ]
        if self.debug:
            options.append(("--debug", None))
        # Only when used, so enclaves without provisioning keep the MRENCLAVE they had.
        if self.provision is not None:
            options += [
                ("--provision", self.provision),
                ("--provision-timeout", str(self.provision_timeout)),
            ]
        if self.secrets_server is not None and self.secrets_server_ca is not None:
            # The server and the CA it must chain to are measured: no host can redirect the pull.
            options += [
                ("--secrets-server", self.secrets_server),
                ("--secrets-server-ca-pem", self.secrets_server_ca),
            ]
        if self.encrypted_code:
            options.append(("--encrypted-code", None))
        if self.certificate is not None:
            options.append(("--certificate-pem", self.certificate))
        # Only when given, so enclaves without them keep the MRENCLAVE they had.
        if self.subject is not None:
            options.append(("--subject", self.subject))
        options += [("--san", name) for name in self.sans]
        return options

    def bootstrap_args(self) -> list[str]:
        return [
            item
            for name, value in self.measured_options()
            for item in (name, value)
            if item is not None
        ]

    def listen_environment(self) -> dict[str, str]:
        """The port and bind address, as the enclave's environment: unmeasured (see above)."""
        return {PORT_VARIABLE: str(self.port), BIND_VARIABLE: self.bind}
