"""``mse-run --subject`` and ``--san``: parsing, the measured argv, and the served certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mse_base._cli import bootstrap as bootstrap_cli
from mse_base._internal.dcap import ratls
from mse_base._internal.enclave import deployment as dep
from mse_base._internal.runtime import bootstrap as runtime_bootstrap
from mse_base.errors import UsageError
from tests.net import free_port, openssl_served_certificate
from tests.processes import stop_process

from .conftest import make_deployment, run_args

UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"

# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("CN=app.example.com,O=Example Corp", "CN=app.example.com,O=Example Corp"),
        ("CN=a+O=b,C=FR", "CN=a+O=b,C=FR"),
        ("2.5.4.3=by-oid", "CN=by-oid"),  # a known type by its OID: written as its keyword
        ("CN=#616263", "CN=abc"),  # a hex value: written as its text
        ("O=Acme\\, Inc.,OU=R\\2bD", "O=Acme\\, Inc.,OU=R\\+D"),
        ("CN=\\#hash", "CN=\\#hash"),
        ("CN=café,L=Zürich,ST=ZH,STREET=1 Main St,UID=u1,DC=example,DC=com", None),
    ],
)
def test_subject_canonical_form(text: str, canonical: str | None) -> None:
    parsed = dep.parse_subject(text)
    assert parsed == (canonical or text)
    assert dep.parse_subject(parsed) == parsed  # the bootstrap parses it again: a fixed point


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "is empty"),
        ("O=", "O is empty"),
        ("CN=", "not an RFC 4514"),
        ("CN=a, O=b", "no spaces"),
        ("cn=a", "not an RFC 4514"),
        ("CN=a;O=b", "not an RFC 4514"),
        ("FOO=bar", "TYPE one of CN, L, ST"),
        ("emailAddress=a@example.com", "not an RFC 4514"),
        ("1.2.3.4=x", "attribute type 1.2.3.4 is not accepted"),
        ("2.5.4.5=x", "attribute type 2.5.4.5 is not accepted"),  # serialNumber: the UUID's
        ("CN=#0c0161", "control character"),
        ("CN=a\nO=b", "control character"),
        ("CN=\\00", "control character"),
        ("CN=" + "a" * 65, "<= 64"),
        ("C=fr", "two-letter country code"),
        ("C=FRA", "not an RFC 4514"),
        ("DC=é", "one DNS label"),
        ("O=" + "a" * 1100, "at most 1024"),
    ],
)
def test_subject_refused(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        dep.parse_subject(text)
    message = str(err.value)
    assert needle in message and message.startswith("--subject")
    assert "\n" not in message and len(message) < 400


def test_sans_canonical_deduplicated_in_order() -> None:
    given = ["Other.Example.", "10.0.0.1", "other.example", "localhost", "0:0::1", "::1"]
    assert dep.parse_sans(given, "localhost") == ("other.example", "10.0.0.1", "::1")
    assert dep.parse_sans([], "localhost") == ()
    assert len(dep.parse_sans([f"n{i}.example" for i in range(dep.MAX_SANS)], "h")) == 32


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        (["*.example.com"], "--san '*.example.com' is neither a DNS name nor an IP"),
        (["bad name"], "--san 'bad name'"),
        (["-x.example"], "--san '-x.example'"),
        ([""], "--san ''"),
        ([f"n{i}.example" for i in range(33)], "at most 32"),
    ],
)
def test_sans_refused(names: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=r"^--san") as err:
        dep.parse_sans(names, "localhost")
    assert needle in str(err.value)


# --- the measured argv -------------------------------------------------------------------------


def test_argv_only_when_given_and_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = make_deployment().bootstrap_args()
    assert "--subject" not in plain and "--san" not in plain
    given = make_deployment(subject="CN=app.example.com,O=Example Corp", sans=("a.example", "::1"))
    args = given.bootstrap_args()
    assert args[: len(plain)] == plain  # appended: the existing arguments keep their places
    assert args[len(plain) :] == [
        "--subject", "CN=app.example.com,O=Example Corp", "--san", "a.example", "--san", "::1",
    ]  # fmt: skip

    # The bootstrap's own command line, with the environment mse-run sets, rebuilds the very
    # same deployment.
    seen: list[dep.Deployment] = []
    monkeypatch.setattr(runtime_bootstrap, "run", seen.append)
    for deployment in (make_deployment(), given):
        for name, value in deployment.listen_environment().items():
            monkeypatch.setenv(name, value)
        assert bootstrap_cli.main(deployment.bootstrap_args()) == 0
        assert seen.pop() == deployment


def test_certificate_subject_and_sans() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    common = {
        "key": key,
        "host": "localhost",
        "deployment_id": uuid.UUID(UUID),
        "not_after": dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc),
        "quote": b"q",
    }
    default = ratls.build_certificate(**common)  # type: ignore[arg-type]
    assert default.subject.rfc4514_string() == f"2.5.4.5={UUID},CN=localhost"
    cert = ratls.build_certificate(
        **common,  # type: ignore[arg-type]
        subject=x509.Name.from_rfc4514_string("CN=app.example.com,O=Example Corp"),
        sans=("other.example", "10.0.0.1"),
    )
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == f"2.5.4.5={UUID},CN=app.example.com,O=Example Corp"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.DNSName("localhost"),
        x509.DNSName("other.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]


# --- mse-run ---------------------------------------------------------------------------------


def _dry_run_mrenclave(tar: Path, workdir: Path, env: dict[str, str], *extra: str) -> str:
    args = [*run_args(tar, workdir), "--simulation", "--dry-run", "--json", *extra]
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    mrenclave: str = json.loads(result.stdout)["mrenclave"]
    return mrenclave


def test_subject_and_san_are_measured(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    def mrenclave(name: str, *extra: str) -> str:
        return _dry_run_mrenclave(flask_tar, tmp_path / name, env, *extra)

    base = mrenclave("base")
    # A --san that is --host adds nothing to the certificate, and so nothing to the argv.
    assert mrenclave("same-host", "--san", "LOCALHOST") == base
    with_subject = mrenclave("subject", "--subject", "CN=app.example.com,O=Example Corp")
    with_san = mrenclave("san", "--san", "other.example")
    assert len({base, with_subject, with_san}) == 3
    # Canonical forms: the same names, written otherwise, measure the same.
    assert mrenclave("san2", "--san", "Other.Example.", "--san", "other.example") == with_san
    assert mrenclave("subject2", "--subject", "2.5.4.3=app.example.com,O=Example Corp") == (
        with_subject
    )
    manifest = tomllib.loads((tmp_path / "subject" / "mse.manifest").read_text())
    assert manifest["loader"]["argv"][-2:] == ["--subject", "CN=app.example.com,O=Example Corp"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--subject", "CN=a, O=b"], "not an RFC 4514 distinguished name"),
        (["--subject", ""], "--subject is empty"),
        (["--subject", "1.2.3.4=x"], "attribute type 1.2.3.4"),
        (["--subject", "O=" + "a" * 2000], "at most 1024"),
        (["--san", "bad name"], "--san 'bad name'"),
        ([arg for i in range(33) for arg in ("--san", f"n{i}.example")], "at most 32"),
    ],
)
def test_bad_subject_or_san_one_line_nothing_written(
    flask_tar: Path,
    tmp_path: Path,
    env: dict[str, str],
    home: Path,
    extra: list[str],
    needle: str,
) -> None:
    workdir = tmp_path / "wd"
    result = subprocess.run(
        [*run_args(flask_tar, workdir), "--simulation", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mse-run: error: "), result.stderr
    assert needle in lines[0]
    assert not workdir.exists()
    assert list(home.iterdir()) == []


def _curl(port: int, cert: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--cacert", str(cert),
         "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip


def test_served_certificate_has_the_subject_and_sans(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    err = tmp_path / "run.err"
    args = [
        *run_args(flask_tar, tmp_path / "wd", **{"--port": str(port)}),
        "--simulation",
        "--subject",
        "CN=app.example.com,O=Example Corp,C=FR",
        "--san",
        "Other.Example",
        "--san",
        "127.0.0.1",
    ]
    with err.open("w") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + 120
        while "RA-TLS check passed" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        cert_path = openssl_served_certificate(port, tmp_path / "cert.pem")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
            "app.example.com"
        ]
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
            "Example Corp"
        )
        assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "FR"
        assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == UUID
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost", "other.example"]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]

        # Each name the certificate carries is one a client can verify; others are refused.
        for name in ("other.example", "localhost"):
            response = _curl(port, cert_path, name)
            assert response.returncode == 0, response.stderr
            assert response.stdout == "Hello from Flask in the enclave"
        by_ip = subprocess.run(
            ["curl", "--silent", "--show-error", "--fail", "--cacert", str(cert_path),
             f"https://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert by_ip.returncode == 0, by_ip.stderr
        unlisted = _curl(port, cert_path, "app.example.com")  # in the CN only: not a SAN
        assert unlisted.returncode != 0
        assert "certificate" in unlisted.stderr.lower() or "match" in unlisted.stderr.lower()
    finally:
        stop_process(proc)
