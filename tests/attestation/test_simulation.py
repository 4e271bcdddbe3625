"""The simulation PKI and quotes, checked with independent code (struct + cryptography)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mse_base._internal.dcap.collateral import split_signed_json
from mse_base._internal.dcap.pck import parse_pck_extensions
from mse_base._internal.simulation import pki as simulation
from mse_base._internal.simulation.pki import (
    SimulationPKI,
    SimulationQuoteProvider,
    ensure_simulation_pki,
    simulation_dir,
)
from mse_base.errors import EnvironmentMissing
from tests.bounded import within

MRENCLAVE = hashlib.sha256(b"enclave").digest()
MRSIGNER = hashlib.sha256(b"signer").digest()


def _verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` (r||s) signs ``data``."""
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def _key_from_xy(xy: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)


def test_simulation_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert simulation_dir() == tmp_path / "mse" / "simulation"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert simulation_dir() == tmp_path / "home" / ".config" / "mse" / "simulation"
    # A relative XDG value is invalid per the spec and ignored.
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert simulation_dir() == tmp_path / "home" / ".config" / "mse" / "simulation"


def test_pki_files_and_modes(sim_pki: SimulationPKI) -> None:
    directory = sim_pki.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    keys = sorted(p.name for p in directory.glob("*.key"))
    assert keys == ["attestation.key", "ca.key", "pck.key", "pck_ca.key", "tcb_signing.key"]
    for name in keys:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert sim_pki.ca_pem_path == directory / "ca.pem"
    names = sorted(p.name for p in sim_pki.collateral_dir.iterdir())
    assert names == [
        "pck_crl.der",
        "qe_identity.json",
        "root_ca_crl.der",
        "tcb_info.json",
        "tcb_info_issuer_chain.pem",
    ]
    # No temporary files left behind.
    assert not list(directory.rglob("*.tmp"))


def test_ca_says_simulation(sim_pki: SimulationPKI) -> None:
    ca = sim_pki.ca_certificate
    assert "MSE SIMULATION" in ca.subject.rfc4514_string()
    assert "NOT SGX" in ca.subject.rfc4514_string()
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_pck_chain_and_sgx_extensions(sim_pki: SimulationPKI) -> None:
    leaf, pck_ca, root = x509.load_pem_x509_certificates(sim_pki.pck_chain_pem)
    assert root == sim_pki.ca_certificate
    leaf.verify_directly_issued_by(pck_ca)
    pck_ca.verify_directly_issued_by(root)
    assert "Processor" in pck_ca.subject.rfc4514_string()
    # Read back with the verifier's own parser: the encoding matches Intel's layout.
    ext = parse_pck_extensions(leaf)
    assert ext.tcb_components == simulation.SIMULATION_TCB_COMPONENTS
    assert ext.pcesvn == simulation.SIMULATION_PCESVN
    assert ext.cpusvn == bytes(simulation.SIMULATION_TCB_COMPONENTS)
    assert ext.fmspc.hex() == simulation.SIMULATION_FMSPC
    assert ext.pce_id == b"\0\0"
    assert len(ext.ppid) == 16
    assert ext.sgx_type.lower() == "standard"


def test_sgx_extension_has_intel_shape(shared: Path, sim_pki: SimulationPKI) -> None:
    """Same OIDs, order and ASN.1 types as a real Intel PCK certificate, nested TCB included."""
    from asn1crypto import core

    def shape(der: bytes) -> list[tuple[str, int, object]]:
        out: list[tuple[str, int, object]] = []
        # A field-less asn1crypto Sequence is indexed, not iterated.
        outer = core.Sequence.load(der)
        for index in range(len(outer)):
            pair = core.Sequence.load(outer[index].dump())
            oid = core.ObjectIdentifier.load(pair[0].dump()).dotted
            value = pair[1]
            nested = shape(value.dump()) if value.tag == 16 else None  # SEQUENCE
            out.append((oid, value.tag, nested))
        return out

    def extension(cert: x509.Certificate) -> bytes:
        value = cert.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(simulation.SGX_EXTENSIONS_OID)
        ).value
        assert isinstance(value, x509.UnrecognizedExtension)
        return value.value

    raw = (shared / "phala_sgx_v3" / "quote.bin").read_bytes()
    real_leaf = x509.load_pem_x509_certificates(raw[raw.index(b"-----BEGIN") :])[0]
    sim_leaf = x509.load_pem_x509_certificates(sim_pki.pck_chain_pem)[0]
    assert shape(extension(sim_leaf)) == shape(extension(real_leaf))
    assert len(shape(extension(sim_leaf))[1][2]) == 18  # type: ignore[arg-type]


def test_collateral_signatures_and_crls(sim_pki: SimulationPKI) -> None:
    collateral = sim_pki.collateral_dir
    tcb_cert, root = x509.load_pem_x509_certificates(
        (collateral / "tcb_info_issuer_chain.pem").read_bytes()
    )
    assert root == sim_pki.ca_certificate
    tcb_cert.verify_directly_issued_by(root)
    signer = tcb_cert.public_key()
    assert isinstance(signer, ec.EllipticCurvePublicKey)
    now = dt.datetime.now(dt.timezone.utc)
    for name, key in (("tcb_info.json", "tcbInfo"), ("qe_identity.json", "enclaveIdentity")):
        raw = (collateral / name).read_bytes()
        text, signature = split_signed_json(raw, key)
        _verify_raw(signer, signature, text)
        body = json.loads(text)
        issued = dt.datetime.fromisoformat(body["issueDate"].replace("Z", "+00:00"))
        next_update = dt.datetime.fromisoformat(body["nextUpdate"].replace("Z", "+00:00"))
        assert issued <= now < next_update
        assert next_update - issued == dt.timedelta(days=30)
    tcb = json.loads(split_signed_json((collateral / "tcb_info.json").read_bytes(), "tcbInfo")[0])
    assert tcb["fmspc"] == simulation.SIMULATION_FMSPC
    (level,) = tcb["tcbLevels"]
    assert level["tcbStatus"] == "UpToDate"
    assert [c["svn"] for c in level["tcb"]["sgxtcbcomponents"]] == list(
        simulation.SIMULATION_TCB_COMPONENTS
    )
    _, pck_ca, _ = x509.load_pem_x509_certificates(sim_pki.pck_chain_pem)
    for name, issuer in (("pck_crl.der", pck_ca), ("root_ca_crl.der", root)):
        crl = x509.load_der_x509_crl((collateral / name).read_bytes())
        assert crl.issuer == issuer.subject
        issuer_key = issuer.public_key()
        assert isinstance(issuer_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(issuer_key)
        assert crl.next_update_utc is not None and crl.next_update_utc > now
        assert len(crl) == 0


def test_quote_structure(sim_pki: SimulationPKI) -> None:
    provider = SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=MRSIGNER,
        isv_prod_id=7,
        isv_svn=3,
        directory=sim_pki.directory,
    )
    assert provider.simulated is True
    report_data = bytes(range(64))
    quote = provider.quote(report_data)

    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", quote)
    assert (version, key_type, tee_type) == (3, 2, 0)
    assert quote[12:28] == bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
    body = quote[48:432]
    assert body[64:96] == MRENCLAVE and body[128:160] == MRSIGNER
    assert struct.unpack_from("<HH", body, 256) == (7, 3)
    assert body[320:384] == report_data
    flags = struct.unpack_from("<Q", body, 48)[0]
    assert flags & 0x02 == 0  # not DEBUG
    (sig_len,) = struct.unpack_from("<I", quote, 432)
    sig = quote[436:]
    assert len(sig) == sig_len

    att_key = _key_from_xy(sig[64:128])
    _verify_raw(att_key, sig[:64], quote[:432])
    qe_report = sig[128:512]
    leaf = x509.load_pem_x509_certificates(sim_pki.pck_chain_pem)[0]
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    _verify_raw(leaf_key, sig[512:576], qe_report)
    (auth_len,) = struct.unpack_from("<H", sig, 576)
    auth = sig[578 : 578 + auth_len]
    assert qe_report[320:352] == hashlib.sha256(sig[64:128] + auth).digest()
    assert qe_report[352:384] == bytes(32)
    assert qe_report[128:160] == simulation.QE_MRSIGNER
    assert struct.unpack_from("<HH", qe_report, 256) == (1, qe_svn)
    cert_type, cert_len = struct.unpack_from("<HI", sig, 578 + auth_len)
    assert cert_type == 5
    chain = sig[578 + auth_len + 6 :]
    assert len(chain) == cert_len
    assert chain == sim_pki.pck_chain_pem
    assert pce_svn == simulation.SIMULATION_PCESVN


def test_debug_flag_and_fresh_signatures(sim_pki: SimulationPKI) -> None:
    provider = SimulationQuoteProvider(
        mrenclave=MRENCLAVE, mrsigner=MRSIGNER, debug=True, directory=sim_pki.directory
    )
    quote = provider.quote(bytes(64))
    assert struct.unpack_from("<Q", quote, 48 + 48)[0] & 0x02
    # ECDSA signatures are randomised: two quotes of the same data differ only there.
    again = provider.quote(bytes(64))
    assert quote[:432] == again[:432] and quote[436:500] != again[436:500]


def test_bad_inputs_rejected(sim_pki: SimulationPKI) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SimulationQuoteProvider(mrenclave=b"short", mrsigner=MRSIGNER, directory=sim_pki.directory)
    provider = SimulationQuoteProvider(
        mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=sim_pki.directory
    )
    with pytest.raises(ValueError, match="64 bytes"):
        provider.quote(b"x" * 63)


def test_idempotent_keeps_keys(tmp_path: Path) -> None:
    first = ensure_simulation_pki(tmp_path / "sim")
    keys = {p.name: p.read_bytes() for p in (tmp_path / "sim").glob("*.key")}
    tcb_info = (first.collateral_dir / "tcb_info.json").read_bytes()
    second = ensure_simulation_pki(tmp_path / "sim")
    assert {p.name: p.read_bytes() for p in (tmp_path / "sim").glob("*.key")} == keys
    # Fresh collateral is not re-issued either.
    assert (second.collateral_dir / "tcb_info.json").read_bytes() == tcb_info


def test_stale_collateral_is_reissued_with_same_keys(tmp_path: Path) -> None:
    pki = ensure_simulation_pki(tmp_path / "sim")
    keys = {p.name: p.read_bytes() for p in (tmp_path / "sim").glob("*.key")}
    ca = pki.ca_pem_path.read_bytes()
    path = pki.collateral_dir / "tcb_info.json"
    raw = path.read_text()
    body = json.loads(raw)
    stale = raw.replace(body["tcbInfo"]["nextUpdate"], "2020-01-01T00:00:00Z")
    path.write_text(stale)
    (pki.collateral_dir / "pck_crl.der").unlink()
    ensure_simulation_pki(tmp_path / "sim")
    assert path.read_text() != stale
    assert (pki.collateral_dir / "pck_crl.der").is_file()
    assert {p.name: p.read_bytes() for p in (tmp_path / "sim").glob("*.key")} == keys
    assert pki.ca_pem_path.read_bytes() == ca


_CREATE = """
import sys
from pathlib import Path
from mse_base._internal.simulation.pki import SimulationQuoteProvider
p = SimulationQuoteProvider(mrenclave=bytes(32), mrsigner=bytes(32), directory=Path(sys.argv[1]))
sys.stdout.write(p.pki.ca_pem_path.read_text())
p.quote(bytes(64))
"""


def test_concurrent_creation_yields_one_pki(tmp_path: Path) -> None:
    directory = tmp_path / "sim"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE, str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    # Everyone saw the same CA, and it is the one on disk.
    cas = {out for out, _ in outputs}
    assert cas == {(directory / "ca.pem").read_bytes()}
    leaf = x509.load_pem_x509_certificate((directory / "pck.pem").read_bytes())
    pck_ca = x509.load_pem_x509_certificate((directory / "pck_ca.pem").read_bytes())
    leaf.verify_directly_issued_by(pck_ca)


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    from mse_base.errors import EnvironmentMissing

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EnvironmentMissing, match="XDG_CONFIG_HOME"):
        ensure_simulation_pki(blocker / "sim")


def test_private_keys_never_world_readable_during_creation(tmp_path: Path) -> None:
    # os.open(..., 0o600) is what guarantees it; a permissive umask must not widen it.
    old = os.umask(0)
    try:
        ensure_simulation_pki(tmp_path / "sim")
    finally:
        os.umask(old)
    keys = sorted((tmp_path / "sim").glob("*.key"))
    assert [k.name for k in keys] == [
        "attestation.key",
        "ca.key",
        "pck.key",
        "pck_ca.key",
        "tcb_signing.key",
    ]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "sim").stat().st_mode) == 0o700


def test_refresh_collateral_never_creates_keys(tmp_path: Path) -> None:
    from mse_base._internal.simulation.pki import refresh_collateral

    empty = tmp_path / "copied"
    empty.mkdir()
    assert refresh_collateral(empty) is False
    assert list(empty.iterdir()) == []
    pki = ensure_simulation_pki(tmp_path / "sim")
    path = pki.collateral_dir / "qe_identity.json"
    path.unlink()
    keys = {p.name: p.read_bytes() for p in pki.directory.glob("*.key")}
    assert refresh_collateral(pki.directory) is True
    assert path.is_file()
    assert {p.name: p.read_bytes() for p in pki.directory.glob("*.key")} == keys


def test_independent_verifier_accepts_simulation_quotes(sim_pki: SimulationPKI) -> None:
    """Phala's Rust verifier (dcap-qvl), given the simulation root, accepts our quotes."""
    import time
    from importlib import resources

    import dcap_qvl
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    quote = SimulationQuoteProvider(
        mrenclave=MRENCLAVE, mrsigner=MRSIGNER, directory=sim_pki.directory
    ).quote(bytes(64))
    # mse-run --direct's quotes: another attestation key, the real-measurement QE auth data.
    direct = SimulationQuoteProvider(
        mrenclave=MRENCLAVE,
        mrsigner=MRSIGNER,
        quoting_enclave=sim_pki.quoting_enclave(
            ec.generate_private_key(ec.SECP256R1()), real_measurement=True
        ),
    ).quote(bytes(64))
    collateral_dir = sim_pki.collateral_dir
    pck_ca_and_root = x509.load_pem_x509_certificates(sim_pki.pck_chain_pem)[1:]
    tcb_text, tcb_sig = split_signed_json(
        (collateral_dir / "tcb_info.json").read_bytes(), "tcbInfo"
    )
    qe_text, qe_sig = split_signed_json(
        (collateral_dir / "qe_identity.json").read_bytes(), "enclaveIdentity"
    )
    issuer_chain = (collateral_dir / "tcb_info_issuer_chain.pem").read_text()
    collateral = dcap_qvl.QuoteCollateralV3(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pck_ca_and_root).decode(),
        (collateral_dir / "root_ca_crl.der").read_bytes(),
        (collateral_dir / "pck_crl.der").read_bytes(),
        issuer_chain,
        tcb_text.decode(),
        tcb_sig,
        issuer_chain,
        qe_text.decode(),
        qe_sig,
    )
    now = int(time.time())
    root = sim_pki.ca_certificate.public_bytes(serialization.Encoding.DER)
    report = dcap_qvl.verify_with_root_ca(quote, collateral, root, now)
    assert report.status == "UpToDate"
    assert dcap_qvl.verify_with_root_ca(direct, collateral, root, now).status == "UpToDate"
    # With Intel's root (its default), the same quote is refused.
    intel = resources.files("mse_base").joinpath("_store/intel_sgx_root_ca.der").read_bytes()
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(quote, collateral, intel, now)
    tampered = bytearray(quote)
    tampered[48 + 64] ^= 1
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(bytes(tampered), collateral, root, now)


def test_key_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    from mse_base._internal.simulation.pki import _read_private_key

    # A FIFO with no writer: a plain open would block forever.
    fifo = tmp_path / "attestation.key"
    os.mkfifo(fifo, 0o600)
    with within(), pytest.raises(EnvironmentMissing, match="not a regular file"):
        _read_private_key(fifo)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("ca.pem", "is a character device"), ("pck.pem", "is larger than 64 KiB")],
    ids=["ca-dev-zero", "pck-huge"],
)
def test_pki_certificates_are_regular_and_capped(tmp_path: Path, name: str, reason: str) -> None:
    directory = tmp_path / "sim"
    ensure_simulation_pki(directory)
    path = directory / name
    path.unlink()
    if name == "ca.pem":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(b"-" * (64 * 1024 + 1))
    pki = simulation.SimulationPKI(directory)
    with within(), pytest.raises(EnvironmentMissing) as caught:
        pki.ca_certificate if name == "ca.pem" else pki.pck_chain_pem  # noqa: B018
    assert f"{path} {reason}" in str(caught.value)
    assert "to recreate the simulation PKI" in str(caught.value)


def test_collateral_that_is_a_fifo_is_reissued_without_blocking(tmp_path: Path) -> None:
    directory = tmp_path / "sim"
    ensure_simulation_pki(directory)
    tcb_info = directory / "collateral" / "tcb_info.json"
    tcb_info.unlink()
    os.mkfifo(tcb_info)
    with within():
        ensure_simulation_pki(directory)
    assert tcb_info.is_file()
    assert json.loads(tcb_info.read_bytes())["tcbInfo"]["fmspc"] == simulation.SIMULATION_FMSPC


@pytest.mark.parametrize("damage", ["garbage", "world-readable"])
def test_damaged_key_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "sim"
    ensure_simulation_pki(directory)
    key = directory / "attestation.key"
    if damage == "garbage":
        key.write_bytes(b"not a key")
        needle = "not a PEM private key"
    else:
        key.chmod(0o644)
        needle = "by other users .*must be 0600"
    provider = SimulationQuoteProvider(mrenclave=bytes(32), mrsigner=bytes(32), directory=directory)
    with pytest.raises(EnvironmentMissing, match=needle):
        provider.quote(bytes(64))
