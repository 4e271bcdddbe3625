"""Unit tests of the pipeline's parsers: sizes, deployment parameters, SIGSTRUCT, tar checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mse_base._internal.enclave import codetar, deployment, sigstruct
from mse_base._internal.enclave.size import parse_enclave_size
from mse_base.errors import UsageError


@pytest.mark.parametrize(("text", "value"), [("512M", 512 << 20), ("8G", 8 << 30), ("1g", 1 << 30)])
def test_sizes_accepted(text: str, value: int) -> None:
    assert parse_enclave_size(text) == value


def test_size_not_power_of_two_names_neighbours() -> None:
    with pytest.raises(UsageError, match=r"use 4G or 8G"):
        parse_enclave_size("6G")
    with pytest.raises(UsageError, match=r"use 512M or 1G"):
        parse_enclave_size("768M")


@pytest.mark.parametrize("text", ["", "8", "8GB", "-1G", "0G", "1.5G", "128M"])
def test_sizes_rejected(text: str) -> None:
    with pytest.raises(UsageError, match="--size"):
        parse_enclave_size(text)


def test_uuid_must_be_canonical() -> None:
    assert str(deployment.parse_uuid("533a2b83-4bc5-4a9c-955e-208c530bfd15"))
    for bad in [
        "nope",
        "533a2b834bc54a9c955e208c530bfd15",
        "{533a2b83-4bc5-4a9c-955e-208c530bfd15}",
    ]:
        with pytest.raises(UsageError, match="--uuid"):
            deployment.parse_uuid(bad)


def test_expiry_in_past_rejected() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(UsageError, match="in the past"):
        deployment.parse_expiry(str(int(now.timestamp()) - 1), now)
    assert deployment.parse_expiry(str(int(now.timestamp()) + 60), now) > now


@pytest.mark.parametrize("host", ["localhost", "app.example.com", "127.0.0.1", "::1"])
def test_hosts_accepted(host: str) -> None:
    assert deployment.parse_host(host)


@pytest.mark.parametrize("host", ["", "a b", "-bad.example", "x" * 64 + ".com", "under_score.com"])
def test_hosts_rejected(host: str) -> None:
    with pytest.raises(UsageError, match="--host"):
        deployment.parse_host(host)


@pytest.fixture(scope="module")
def sgx_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=3, key_size=3072)


def test_sigstruct_round_trip(sgx_key: rsa.RSAPrivateKey) -> None:
    mrenclave = hashlib.sha256(b"enclave").digest()
    data = sigstruct.build_sigstruct(
        key=sgx_key, mrenclave=mrenclave, isv_prod_id=7, isv_svn=3, debug=False
    )
    parsed = sigstruct.parse_sigstruct(data)
    modulus_le = sgx_key.public_key().public_numbers().n.to_bytes(384, "little")
    assert parsed.mrenclave == mrenclave
    assert parsed.mrsigner == hashlib.sha256(modulus_le).digest()
    assert (parsed.isv_prod_id, parsed.isv_svn, parsed.debug) == (7, 3, False)
    assert sigstruct.parse_sigstruct(
        sigstruct.build_sigstruct(
            key=sgx_key, mrenclave=mrenclave, isv_prod_id=0, isv_svn=0, debug=True
        )
    ).debug


@pytest.mark.parametrize("offset", [0, 20, 128, 600, 900, 930, 960, 1024, 1100, 1500])
def test_sigstruct_tampering_detected(sgx_key: rsa.RSAPrivateKey, offset: int) -> None:
    data = bytearray(
        sigstruct.build_sigstruct(
            key=sgx_key, mrenclave=bytes(32), isv_prod_id=0, isv_svn=0, debug=False
        )
    )
    data[offset] ^= 0x01
    with pytest.raises(sigstruct.SigstructError):
        sigstruct.parse_sigstruct(bytes(data))


def test_sigstruct_rejects_wrong_size_and_key() -> None:
    with pytest.raises(sigstruct.SigstructError, match="1808"):
        sigstruct.parse_sigstruct(b"\0" * 100)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(sigstruct.SigstructError, match="RSA-3072"):
        sigstruct.build_sigstruct(
            key=key, mrenclave=bytes(32), isv_prod_id=0, isv_svn=0, debug=False
        )


def _tar_with(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


EVIL = {
    "absolute": [(_info("/etc/evil"), b"x")],
    "dotdot": [(_info("a/../../evil"), b"x")],
    "symlink-out": [(_info("link", type=tarfile.SYMTYPE, linkname="../../etc/passwd"), b"")],
    "symlink-abs": [(_info("link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), b"")],
    "hardlink-out": [(_info("hl", type=tarfile.LNKTYPE, linkname="../outside"), b"")],
    # Inside as text, but '..' can climb out through another link: refused outright.
    "symlink-dotdot-inside": [
        (_info("pkg", type=tarfile.DIRTYPE), b""),
        (_info("pkg/alias.py", type=tarfile.SYMTYPE, linkname="../ok.py"), b""),
    ],
    "symlink-empty": [(_info("link", type=tarfile.SYMTYPE, linkname=""), b"")],
    # A hard link may only name a regular file listed before it.
    "hardlink-missing": [(_info("hl", type=tarfile.LNKTYPE, linkname="nothing.py"), b"")],
    "hardlink-later": [
        (_info("hl", type=tarfile.LNKTYPE, linkname="later.py"), b""),
        (_info("later.py"), b"x"),
    ],
    "hardlink-to-symlink": [
        (_info("s", type=tarfile.SYMTYPE, linkname="ok.py"), b""),
        (_info("hl", type=tarfile.LNKTYPE, linkname="s"), b""),
    ],
    "device": [(_info("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3), b"")],
    "fifo": [(_info("fifo", type=tarfile.FIFOTYPE), b"")],
    "setuid": [(_info("suid", mode=0o4755), b"x")],
    "duplicate": [(_info("app.py"), b"a"), (_info("./app.py"), b"b")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_malicious_tar_rejected_and_nothing_written(tmp_path: Path, case: str) -> None:
    tar = _tar_with(tmp_path, (_info("ok.py"), b"print(1)"), *EVIL[case])
    destination = tmp_path / "out" / "code"
    with pytest.raises(UsageError, match="--code"):
        codetar.unpack_code(tar, destination)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "evil").exists()


def test_caps_on_count_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = _tar_with(tmp_path, *[(_info(f"f{i}.py"), b"x" * 10) for i in range(5)])
    monkeypatch.setattr(codetar, "MAX_MEMBERS", 4)
    with pytest.raises(UsageError, match="more entries than the 4 allowed"):
        codetar.unpack_code(tar, tmp_path / "a")
    monkeypatch.setattr(codetar, "MAX_MEMBERS", 100)
    monkeypatch.setattr(codetar, "MAX_TOTAL_BYTES", 30)
    with pytest.raises(UsageError, match="unpacks to more than"):
        codetar.unpack_code(tar, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_gzip_and_inner_links_accepted(tmp_path: Path) -> None:
    path = tmp_path / "app.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        data = b"x = 1\n"
        info = _info("./pkg/mod.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        archive.addfile(_info("pkg/alias.py", type=tarfile.SYMTYPE, linkname="mod.py"))
        # Links to links, in any order, stay inside once no target has '..'.
        archive.addfile(_info("top.py", type=tarfile.SYMTYPE, linkname="here/alias.py"))
        archive.addfile(_info("here", type=tarfile.SYMTYPE, linkname="pkg"))
        archive.addfile(_info("hard.py", type=tarfile.LNKTYPE, linkname="./pkg/mod.py"))
    unpacked = codetar.unpack_code(path, tmp_path / "code")
    code = tmp_path / "code"
    assert (code / "pkg" / "mod.py").read_bytes() == b"x = 1\n"
    assert (code / "top.py").read_bytes() == b"x = 1\n"
    assert (code / "hard.py").read_bytes() == b"x = 1\n"
    assert unpacked.files == 1


def test_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "app.tar"
    path.write_bytes(b"this is not a tar file at all" * 20)
    with pytest.raises(UsageError) as caught:
        codetar.unpack_code(path, tmp_path / "code")
    assert str(caught.value) == f"--code {path}: not a tar or tar.gz archive"
    assert not (tmp_path / "code").exists()


def test_tar_without_files_refused_before_writing(tmp_path: Path) -> None:
    path = _tar_with(tmp_path, (_info("only-a-dir", type=tarfile.DIRTYPE), b""))
    with pytest.raises(UsageError, match="contains no files"):
        codetar.inspect_code(path)
    with pytest.raises(UsageError, match="contains no files"):
        codetar.unpack_code(path, tmp_path / "out" / "code")
    assert not (tmp_path / "out").exists()


def test_old_python_without_tar_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian 12's Python 3.11.2 has no tarfile extraction filters: the same checks must hold.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    evil = _tar_with(tmp_path, (_info("a/../../evil"), b"x"))
    with pytest.raises(UsageError, match=r"'\.\.'"):
        codetar.unpack_code(evil, tmp_path / "bad")
    good = _tar_with(tmp_path, (_info("app.py", mode=0o640, uid=4242, gid=4242), b"x = 1\n"))
    codetar.unpack_code(good, tmp_path / "code")
    extracted = tmp_path / "code" / "app.py"
    assert extracted.read_bytes() == b"x = 1\n"
    assert extracted.stat().st_mode & 0o777 == 0o644
    assert extracted.stat().st_uid != 4242


def test_manifest_thread_budget_covers_the_server() -> None:
    # Gramine needs four of its own threads (main, IPC, async, TLS handshake) on top of ours; the
    # manifest's constant must not depend on the machine, or MRENCLAVE would.
    from mse_base._internal.enclave import pipeline
    from mse_base._internal.runtime import serve

    assert serve.MAX_THREADS + 4 <= pipeline.MAX_THREADS


def test_write_private_tightens_an_existing_file(tmp_path: Path) -> None:
    from mse_base._internal.enclave.signer import write_private

    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"secret")
    assert path.read_bytes() == b"secret"
    assert path.stat().st_mode & 0o777 == 0o600


def test_cli_guard_leaves_the_apps_warnings_alone() -> None:
    """Only mse-verify silences library warnings: the bootstrap runs the user's app."""
    import argparse
    import warnings

    from mse_base import _cli

    def body(_args: argparse.Namespace) -> int:
        warnings.warn("the app's own warning", UserWarning, stacklevel=1)
        return 0

    with pytest.warns(UserWarning, match="the app's own warning"):
        assert _cli.guard("mse-bootstrap", body, argparse.Namespace(debug=False)) == 0


def test_a_mount_that_would_hide_another_is_refused() -> None:
    from mse_base._internal.enclave import manifest

    ok = [
        {"type": "tmpfs", "path": "/tmp"},
        {"path": "/lib", "uri": "file:/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"},
        {"path": "/lib/x86_64-linux-gnu", "uri": "file:/lib/x86_64-linux-gnu"},
        {"path": "/tmp/venv", "uri": "file:/tmp/venv"},
    ]
    manifest.check_mounts(ok)
    # A host library directory at /lib would cover Gramine's glibc.
    with pytest.raises(manifest.ManifestError, match=r"runtime/glibc is mounted at /lib"):
        manifest.check_mounts([*ok, {"path": "/lib", "uri": "file:/lib"}])
    with pytest.raises(manifest.ManifestError, match=r"tmpfs is mounted over /tmp after it"):
        manifest.check_mounts([*ok, {"type": "tmpfs", "path": "/tmp"}])


def test_names_only_this_hosts_file_maps_are_told_apart(tmp_path: Path) -> None:
    """The enclave's /etc/hosts names localhost; the host's may name more, which the enclave
    then asks DNS for."""
    from mse_base._internal.enclave import manifest

    hosts = tmp_path / "hosts"
    hosts.write_bytes(
        b"127.0.0.1 localhost\n10.0.0.7\tSecrets.Internal vault # not-this-one\n::1 ip6-loopback\n"
    )
    assert manifest.only_in_host_files("secrets.internal", hosts)
    assert manifest.only_in_host_files("secrets.internal.", hosts)
    assert manifest.only_in_host_files("vault", hosts)
    for name in ("localhost", "ip6-loopback", "not-this-one", "10.0.0.7", "example.com"):
        assert not manifest.only_in_host_files(name, hosts), name
    assert not manifest.only_in_host_files("vault", tmp_path / "missing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not manifest.only_in_host_files("vault", fifo)  # refused from its stat, not waited on

    manifest.write_name_files(tmp_path)
    assert {p.name: p.read_bytes() for p in (tmp_path / "etc").iterdir()} == manifest.NAME_FILES


def test_left_out_parts_and_their_opt_in(tmp_path: Path) -> None:
    from mse_base._internal.enclave import manifest

    stdlib = tmp_path / "python3.11"
    for name in (
        "os.py",
        "turtle.py",
        "tkinter/__init__.py",
        "test/test_os.py",
        "config-3.11-x86_64-linux-gnu/libpython3.11.a",
        "lib-dynload/_tkinter.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        "email/__pycache__/x.cpython-311.pyc",
    ):
        (stdlib / name).parent.mkdir(parents=True, exist_ok=True)
        (stdlib / name).write_text("")

    def kept(include: frozenset[str]) -> list[str]:
        walked = manifest._walk(stdlib, manifest._stdlib_skip(include))
        return sorted(p.relative_to(stdlib).as_posix() for p in walked)

    assert kept(frozenset()) == ["lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", "os.py"]
    assert kept(frozenset({"tkinter"})) == [
        "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_tkinter.cpython-311-x86_64-linux-gnu.so",
        "os.py",
        "tkinter/__init__.py",
        "turtle.py",
    ]
    site = tmp_path / "site-packages"
    for name in ("pip/__init__.py", "pip-26.3.dist-info/RECORD", "flask/__init__.py"):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text("")
    venv = sorted(
        p.relative_to(site).as_posix()
        for p in manifest._walk(site, manifest._venv_skip(frozenset()))
    )
    assert venv == ["flask/__init__.py"]
    with pytest.raises(UsageError, match="--include numpy"):
        manifest.check_included(["numpy"])


def test_direct_launch_line_round_trip_and_refusals(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from mse_base._internal.simulation.direct import DirectLaunch
    from mse_base._internal.simulation.pki import ensure_simulation_pki

    qe = ensure_simulation_pki(tmp_path / "pki").quoting_enclave(
        ec.generate_private_key(ec.SECP256R1())
    )
    launch = DirectLaunch(
        mrenclave=bytes(range(32)),
        mrsigner=bytes(32),
        isv_prod_id=1,
        isv_svn=2,
        debug=False,
        quoting_enclave=qe,
        sealing_key=bytes(16),
    )
    back = DirectLaunch.read(io.BytesIO(launch.to_line() + b"ignored"))
    assert back.mrenclave == launch.mrenclave and back.sealing_key == launch.sealing_key
    assert back.quoting_enclave.attestation_public_key == qe.attestation_public_key
    for bad in (b"", b"{}\n", b"not json\n", launch.to_line()[:-20] + b"\n"):
        with pytest.raises(ValueError):
            DirectLaunch.read(io.BytesIO(bad))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("debug", "false", "launch field 'debug' must be true or false, not 'false'"),
        ("debug", 0, "launch field 'debug' must be true or false, not 0"),
        ("isv_svn", True, "launch field 'isv_svn' must be an integer from 0 to 65535, not True"),
        ("isv_svn", "2", "launch field 'isv_svn' must be an integer from 0 to 65535, not '2'"),
        ("isv_prod_id", 65536, "launch field 'isv_prod_id' must be an integer from 0 to 65535"),
        ("isv_prod_id", -1, "launch field 'isv_prod_id' must be an integer from 0 to 65535"),
        ("mrenclave", "00" * 31, "launch field 'mrenclave' must be 32 bytes in hexadecimal"),
        ("mrsigner", 7, "launch field 'mrsigner' must be 32 bytes in hexadecimal, not 7"),
        ("sealing_key", "zz" * 16, "launch field 'sealing_key' must be 16 bytes in hexadecimal"),
        ("quoting_enclave", [], "launch field 'quoting_enclave' must be an object"),
        ("quoting_enclave", {}, "launch field 'quoting_enclave' is malformed"),
        ("debug", None, "launch field 'debug' must be true or false, not None"),
    ],
)
def test_direct_launch_fields_are_checked_strictly(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    from mse_base._internal.simulation.direct import DirectLaunch
    from mse_base._internal.simulation.pki import ensure_simulation_pki

    qe = ensure_simulation_pki(tmp_path / "pki").quoting_enclave(
        ec.generate_private_key(ec.SECP256R1())
    )
    launch = DirectLaunch(
        mrenclave=bytes(32),
        mrsigner=bytes(32),
        isv_prod_id=1,
        isv_svn=2,
        debug=False,
        quoting_enclave=qe,
        sealing_key=bytes(16),
    )
    data = json.loads(launch.to_line())
    data[field] = value
    with pytest.raises(ValueError) as caught:
        DirectLaunch.read(io.BytesIO(json.dumps(data).encode() + b"\n"))
    assert str(caught.value).startswith(message)
    del data[field]
    with pytest.raises(ValueError, match=f"launch field '{field}' is missing"):
        DirectLaunch.read(io.BytesIO(json.dumps(data).encode() + b"\n"))


def _extension_with_a_missing_library(tmp_path: Path) -> tuple[Path, str]:
    """A copy of one of this Python's extension modules whose first library is renamed.

    The name in its dynamic string table is swapped for one of the same length that no system
    has, so the real ldd reports it "not found", as for a wheel built against a library the
    image lacks.
    """
    import _ctypes
    import re
    import subprocess

    dynload = Path(_ctypes.__file__).parent  # lib-dynload (a venv has none of its own)
    for extension in sorted(dynload.glob("*.so")):
        listed = subprocess.run(["ldd", str(extension)], capture_output=True, text=True).stdout
        needed = re.findall(r"^\s+(lib[a-z]+)(\.so\S*) => /", listed, re.MULTILINE)
        if not needed:
            continue
        stem, suffix = needed[0]
        renamed = "libmsx" + "q" * (len(stem) - 6) if len(stem) >= 6 else "libq" + stem[4:]
        data = extension.read_bytes()
        old, new = f"{stem}{suffix}\0".encode(), f"{renamed}{suffix}\0".encode()
        assert len(old) == len(new) and old in data
        copy = tmp_path / extension.name
        copy.write_bytes(data.replace(old, new))
        return copy, f"{renamed}{suffix}"
    raise AssertionError(f"no extension module in {dynload} links a shared library")


def test_a_library_ldd_cannot_find_is_refused_at_dry_run(tmp_path: Path) -> None:
    import sys

    from mse_base._internal.enclave import manifest
    from mse_base.errors import EnvironmentMissing

    broken, library = _extension_with_a_missing_library(tmp_path)
    # Alone (ldd prints no header) and among others (one "<path>:" header per object).
    for objects in ([broken], [Path(sys.executable), broken]):
        with pytest.raises(EnvironmentMissing) as caught:
            manifest._shared_library_closure(objects, None)
        assert str(caught.value) == (
            f"{broken} needs the shared library {library}, which is not installed (ldd: not "
            f"found), so the enclave could not load it: install the package that provides "
            f"{library} in the image (or on this host) and run mse-run again"
        )
    host, _ = manifest._shared_library_closure([Path(sys.executable)], None)
    assert host, "the interpreter's own libraries are still found"


def test_gramine_pal_errors_are_recognised() -> None:
    """Gramine's PAL logs its errors without the LibOS's ``[P1:..]`` prefix (review C1)."""
    import os as _os

    from mse_base._internal.enclave.supervise import _Relay

    read, write = _os.pipe()
    lines = (
        b"[P1:T1:python3] warning: something harmless\n"
        b"error: PAL failed setting personality failed: Function not implemented\n"
    )
    _os.write(write, lines)
    _os.close(write)
    with _os.fdopen(read, "rb") as stream:
        relay = _Relay(stream)
        relay.join()
    assert (
        relay.gramine_error() == "PAL failed setting personality failed: Function not implemented"
    )


# --- the owner's tools in the measured environment --------------------------------------------


def _dist_info(site: Path, name: str, *requires: str) -> None:
    """An installed distribution's metadata, as pip writes it (the part the rule reads)."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    extras = sorted({r.split('extra == "')[1].rstrip('"') for r in requires if "extra ==" in r})
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Provides-Extra: {extra}" for extra in extras]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_owner_tools_are_those_nothing_of_the_app_needs(tmp_path: Path) -> None:
    from packaging.requirements import Requirement

    from mse_base._internal.extras import owner_tools

    site = tmp_path / "site-packages"
    for tool in ("pyOpenSSL", "pytest", "ruff"):
        _dist_info(site, tool)
    # mse-base's own extras name the tools: that is no need of the app.
    _dist_info(site, "mse-base", 'pyopenssl>=24; extra == "serve"', 'pytest; extra == "test"')
    # A library of the app that needs pyOpenSSL; one whose extras name the others.
    _dist_info(site, "snowflake-connector-python", "pyOpenSSL<25")
    _dist_info(site, "somelib", 'pytest; extra == "test"', 'ruff; extra == "lint"')
    assert owner_tools([site], []) == ["pytest", "ruff"]
    # An extra the app asks for counts; a tool the app names is the app's.
    assert owner_tools([site], [Requirement("somelib[lint]")]) == ["pytest"]
    assert owner_tools([site], [Requirement("PyTest>=8")]) == ["ruff"]


def test_owner_tools_come_from_the_extras_they_name() -> None:
    """Each tool is in the pyproject.toml extra the install hint names for it."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from mse_base._internal.extras import OWNER_TOOLS, extras_of

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for tool, extra in OWNER_TOOLS.items():
        names = {canonicalize_name(Requirement(line).name) for line in extras[extra]}
        assert tool in names, (tool, extra)
    assert extras_of(["pyOpenSSL", "pytest"]) == ["serve", "test"]
