"""``--subject`` and ``--san`` under real Gramine: the argv passes through the manifest intact."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

from cryptography import x509

from tests.net import free_port, openssl_served_certificate
from tests.processes import stop_process

from .test_direct import UUID, dry_run, example_tar, mse_run

SUBJECT = "CN=app.example.com,O=Example\\, Corp,C=FR"
NAMES = ("--san", "other.example", "--san", "127.0.0.1")


def test_subject_and_sans_served_direct(dev_bin: Path, tmp_path: Path, env: dict[str, str]) -> None:
    tar = example_tar("flask", tmp_path / "app.tar")
    port = free_port()
    plain = dry_run(dev_bin, tar, tmp_path / "dry", env, port)["mrenclave"]
    out, err = tmp_path / "direct.out", tmp_path / "direct.err"
    args = [*mse_run(dev_bin, tar, tmp_path / "wd", "--subject", SUBJECT, *NAMES, port=port)]
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([*args, "--direct"], stdout=stdout, stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + 180
        while "RA-TLS check passed (DIRECT)" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        assert out.read_text().split()[1] != plain  # measured

        cert_path = openssl_served_certificate(port, tmp_path / "cert.pem")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert cert.subject.rfc4514_string() == f"2.5.4.5={UUID},{SUBJECT}"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost", "other.example"]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        answer = subprocess.run(
            ["curl", "-sS", "--fail", "--cacert", str(cert_path),
             "--resolve", f"other.example:{port}:127.0.0.1", f"https://other.example:{port}/"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        assert "Hello world" in answer.stdout
    finally:
        stop_process(proc)
