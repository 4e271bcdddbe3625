"""mse-run driven as a subprocess: measurement, manifest, reproducibility and bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .conftest import FLASK_APP, make_tar, run_args


def dry_run(
    tar: Path, workdir: Path, env: dict[str, str], *extra: str, **opts: str
) -> dict[str, Any]:
    args = [*run_args(tar, workdir, **opts), "--simulation", "--dry-run", "--json", *extra]
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_dry_run_prints_simulated_identity(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    args = [*run_args(flask_tar, tmp_path / "wd"), "--simulation", "--dry-run", "--memory"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("MRENCLAVE: ") and lines[0].endswith(" (simulated)")
    assert len(lines[0].split()[1]) == 64
    # The signing key's hash, as in every mode: only the measurement is simulated.
    assert lines[1].startswith("MRSIGNER: ") and "(simulated)" not in lines[1]
    assert any(line.startswith("left for the app: ") for line in lines)
    assert "throwaway key" in result.stderr
    assert "SIMULATION" in result.stderr


def test_json_summary(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    summary = dry_run(flask_tar, tmp_path / "wd", env)
    assert summary["mode"] == "simulation" and summary["simulated"] is True
    assert summary["measurement"] == "simulated"
    assert summary["enclave_size"] == 1 << 30
    assert summary["debug"] is False
    assert summary["trusted_files"] > 100 and summary["trusted_bytes"] > 0
    assert summary["mrsigner_meaningful"] is False
    assert (summary["isv_prod_id"], summary["isv_svn"]) == (0, 0)


def test_manifest_content(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    workdir = tmp_path / "wd"
    expiry = "2000000000"
    dry_run(flask_tar, workdir, env, **{"--self-signed": expiry, "--port": "8443"})
    manifest = tomllib.loads((workdir / "mse.manifest").read_text())
    argv = manifest["loader"]["argv"]
    for value in ("app:app", "localhost", "533a2b83-4bc5-4a9c-955e-208c530bfd15", expiry):
        assert value in argv
    # The port is the host's choice, in the environment Gramine passes through: not measured.
    assert "8443" not in argv and "--port" not in argv
    assert manifest["loader"]["env"]["MSE_PORT"] == {"passthrough": True}
    assert argv[1:5] == ["-I", "-B", "-m", "mse_base._bootstrap"]
    assert manifest["loader"]["entrypoint"]["uri"].startswith("file:")
    assert manifest["sgx"]["remote_attestation"] == "dcap"
    assert manifest["sgx"]["debug"] is False
    assert manifest["sgx"]["enclave_size"] == "1G"
    assert manifest["sys"]["disallow_subprocesses"] is True
    uris = {tf["uri"]: tf["sha256"] for tf in manifest["sgx"]["trusted_files"]}
    assert uris["file:code/app.py"] == __import__("hashlib").sha256(FLASK_APP.encode()).hexdigest()
    assert f"file:{Path(sys.executable).resolve()}" in uris
    assert any(u.endswith("/os.py") for u in uris)
    assert any("/site-packages/flask/" in u for u in uris)
    import mse_base

    assert any(u.startswith(f"file:{Path(mse_base.__file__).parent}/") for u in uris)
    assert not any("__pycache__" in u or u.endswith(".pyc") for u in uris)
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"]
    assert f"file:{stdlib}/json/decoder.py" in uris
    for excluded in ("test", "tkinter", "idlelib", "ensurepip", "site-packages"):
        assert not any(u.startswith(f"file:{stdlib}/{excluded}/") for u in uris)
    mounts = manifest["fs"]["mounts"]
    secrets = [m for m in mounts if m.get("type") == "encrypted"]
    assert secrets == [
        {
            "path": "/mse/secrets",
            "uri": "file:secrets",
            "type": "encrypted",
            "key_name": "_sgx_mrenclave",
        }
    ]
    assert {"path": "/mse/app", "uri": "file:code"} in mounts
    assert not any(str(workdir) in json.dumps(m) for m in mounts)
    # Names: the work directory's etc/ is the enclave's /etc, every file in it fixed and
    # trusted; nothing of the host's passed through unmeasured.
    assert {"path": "/etc", "uri": "file:etc"} in mounts
    assert manifest["sys"]["enable_extra_runtime_domain_names_conf"] is True
    assert "allowed_files" not in manifest["sgx"]
    for name in ("hosts", "nsswitch.conf", "host.conf"):
        content = (workdir / "etc" / name).read_bytes()
        assert uris[f"file:etc/{name}"] == __import__("hashlib").sha256(content).hexdigest()
    assert (workdir / "etc" / "nsswitch.conf").read_bytes() == b"hosts: files dns\n"
    assert b"127.0.0.1 localhost\n" in (workdir / "etc" / "hosts").read_bytes()


def test_debug_flag_reaches_manifest(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    summary = dry_run(flask_tar, tmp_path / "wd", env, "--debug")
    assert summary["debug"] is True
    manifest = tomllib.loads((tmp_path / "wd" / "mse.manifest").read_text())
    assert manifest["sgx"]["debug"] is True


def test_same_inputs_same_mrenclave(tmp_path: Path, env: dict[str, str]) -> None:
    files = {"app.py": FLASK_APP, "static/a.txt": "a", "lib/util.py": "X = 1\n"}
    one = make_tar(tmp_path / "one.tar", files, mtime=1)
    two = make_tar(tmp_path / "two.tar", files, reverse=True, mtime=1_700_000_000)
    first = dry_run(one, tmp_path / "deep" / "path" / "wd1", env)
    second = dry_run(two, tmp_path / "wd2", env)
    assert first["mrenclave"] == second["mrenclave"]
    changed = make_tar(tmp_path / "three.tar", {**files, "lib/util.py": "X = 2\n"})
    assert dry_run(changed, tmp_path / "wd3", env)["mrenclave"] != first["mrenclave"]
    other_uuid = dry_run(
        one, tmp_path / "wd4", env, **{"--uuid": "00000000-0000-4000-8000-000000000000"}
    )
    assert other_uuid["mrenclave"] != first["mrenclave"]


def test_signer_key_gives_stable_mrsigner(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = tmp_path / "enclave-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    first = dry_run(flask_tar, tmp_path / "wd1", env, **{"--signer-key": str(path)})
    second = dry_run(flask_tar, tmp_path / "wd2", env, **{"--signer-key": str(path)})
    assert first["mrsigner"] == second["mrsigner"]
    assert first["mrsigner_meaningful"] is True


def _fails(args: list[str], env: dict[str, str], *needles: str, code: int | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--size", "6G", "use 4G or 8G"),
        ("--size", "lots", "--size"),
        ("--uuid", "not-a-uuid", "--uuid"),
        ("--self-signed", "1000000000", "in the past"),
        ("--self-signed", "tomorrow", "--self-signed"),
        ("--host", "bad host", "--host"),
        ("--application", "app", "module:attribute"),
        # Would be measured and signed, then fail only inside the enclave: refused up front.
        ("--application", "app:a..b", "module:attribute"),
        ("--port", "70000", "--port"),
        ("--code", "/nonexistent/app.tar", "no such file"),
    ],
)
def test_bad_input_one_line_nothing_written(
    flask_tar: Path,
    tmp_path: Path,
    env: dict[str, str],
    home: Path,
    option: str,
    value: str,
    needle: str,
) -> None:
    workdir = tmp_path / "wd"
    _fails([*run_args(flask_tar, workdir, **{option: value}), "--simulation"], env, needle, code=2)
    assert not workdir.exists()
    assert list(home.iterdir()) == []


def test_wrong_key_types(flask_tar: Path, tmp_path: Path, env: dict[str, str], home: Path) -> None:
    rsa_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for name, key in (("rsa.pem", rsa_2048), ("ec.pem", ec_key)):
        path = tmp_path / name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        workdir = tmp_path / f"wd-{name}"
        args = [*run_args(flask_tar, workdir, **{"--signer-key": str(path)}), "--simulation"]
        _fails(args, env, "--signer-key", "exponent 3" if name == "rsa.pem" else "RSA")
        assert not workdir.exists()
    assert list(home.iterdir()) == []


def test_malicious_tar_via_cli(tmp_path: Path, env: dict[str, str], home: Path) -> None:
    import io
    import tarfile

    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as archive:
        info = tarfile.TarInfo("../../escape.py")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    workdir = tmp_path / "wd"
    _fails([*run_args(tar, workdir), "--simulation"], env, "'..'", code=2)
    assert not workdir.exists()
    assert not (tmp_path.parent / "escape.py").exists()
    assert list(home.iterdir()) == []


def test_missing_requirements_listed(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(
        tmp_path / "req.tar",
        {"app.py": FLASK_APP, "requirements.txt": "flask\nsurely-not-installed-pkg==1.0\n"},
    )
    _fails(
        [*run_args(tar, tmp_path / "wd"), "--simulation", "--dry-run"],
        env,
        "surely-not-installed-pkg==1.0 (not installed)",
    )


def _without_gramine(env: dict[str, str]) -> dict[str, str]:
    """The environment with Gramine's tools out of reach: PATH holds only the venv's scripts."""
    from .conftest import BIN

    return {**env, "PATH": str(BIN)}


@pytest.mark.parametrize("mode", [[], ["--direct"]], ids=["sgx", "direct"])
def test_without_gramine_says_what_is_missing(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], home: Path, mode: list[str]
) -> None:
    stderr = _fails(
        [*run_args(flask_tar, tmp_path / "wd"), *mode],
        _without_gramine(env),
        "install the gramine package",
        "--simulation",
        code=3,
    )
    assert ("gramine-direct" if mode else "gramine-sgx") in stderr
    assert not (tmp_path / "wd").exists()
    assert list(home.iterdir()) == []


def test_direct_and_simulation_exclude_each_other(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], home: Path
) -> None:
    args = [*run_args(flask_tar, tmp_path / "wd"), "--direct", "--simulation"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2
    assert "--simulation: not allowed with argument --direct" in result.stderr
    assert not (tmp_path / "wd").exists()
    assert list(home.iterdir()) == []


def test_include_names_a_known_part(
    flask_tar: Path, tmp_path: Path, env: dict[str, str], home: Path
) -> None:
    _fails(
        [*run_args(flask_tar, tmp_path / "wd"), "--simulation", "--include", "numpy"],
        env,
        "--include numpy: not a part left out of the enclave; choose from ",
        "tkinter",
        code=2,
    )
    assert not (tmp_path / "wd").exists()
    assert list(home.iterdir()) == []


def test_workdir_reuse_needs_force(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    workdir = tmp_path / "wd"
    first = dry_run(flask_tar, workdir, env)
    _fails([*run_args(flask_tar, workdir), "--simulation", "--dry-run"], env, "--force")
    again = dry_run(flask_tar, workdir, env, "--force")
    assert again["mrenclave"] == first["mrenclave"]


def test_version(env: dict[str, str]) -> None:
    from .conftest import BIN

    result = subprocess.run(
        [str(BIN / "mse-run"), "--version"], capture_output=True, text=True, env=env, check=True
    )
    assert "mse-base" in result.stdout and "Python: 3." in result.stdout
    installed = shutil.which("gramine-sgx-sign", path=env["PATH"]) is not None
    if installed:
        # The version Gramine's own Python package reports, as its tools print it.
        assert re.search(r"^Gramine: \d+\.\d+", result.stdout, re.MULTILINE), result.stdout
    else:
        assert "Gramine: not installed" in result.stdout


# --- the owner's tools in the measured environment --------------------------------------------


def _own_venv(tmp_path: Path, *dists: str) -> Path:
    """A venv of its own, which mse-run measures, holding only ``dists`` (the dev venv's real
    installed files, copied as pip placed them) and a path file that reaches the toolkit and its
    dependencies in the dev venv (outside what is measured from there)."""
    import importlib.metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    dev_site = sysconfig.get_paths()["purelib"]
    (site / "mse_dev.pth").write_text(f"import site; site.addsitedir({dev_site!r})\n")
    for name in dists:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            if "__pycache__" in file.parts:
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(dist.locate_file(file))), target)
    return venv


def _dry_run_from(venv: Path, tar: Path, tmp_path: Path, env: dict[str, str]) -> str:
    code = "import sys; from mse_base._cli.run import main; sys.exit(main())"
    args = [str(venv / "bin" / "python"), "-c", code, *run_args(tar, tmp_path / "wd")[1:]]
    result = subprocess.run(
        [*args, "--simulation", "--dry-run"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


OWNER_WARNING = "owner or test tools that no requirement of the app needs"


def test_owner_tools_in_the_measured_venv_are_named(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """pyOpenSSL (mse-secrets serve's) in the venv the enclave measures: one warning line that
    says where it belongs, from where this toolkit came (here: this clone, editable)."""
    root = Path(__file__).resolve().parents[2]
    stderr = _dry_run_from(_own_venv(tmp_path, "pyOpenSSL"), flask_tar, tmp_path, env)
    [line] = [line for line in stderr.splitlines() if OWNER_WARNING in line]
    assert line.startswith("mse-run: warning: the environment the enclave measures (")
    assert " holds pyOpenSSL: " in line
    assert f"~/mse-owner/bin/pip install '{root}[serve]'" in line
    assert "Traceback" not in stderr


def test_no_owner_tools_no_warning(flask_tar: Path, tmp_path: Path, env: dict[str, str]) -> None:
    stderr = _dry_run_from(_own_venv(tmp_path), flask_tar, tmp_path, env)
    assert OWNER_WARNING not in stderr


def test_an_owner_tool_the_app_requires_is_no_warning(tmp_path: Path, env: dict[str, str]) -> None:
    tar = make_tar(
        tmp_path / "app.tar", {"app.py": FLASK_APP, "requirements.txt": "flask\npyOpenSSL\n"}
    )
    stderr = _dry_run_from(_own_venv(tmp_path, "pyOpenSSL"), tar, tmp_path, env)
    assert OWNER_WARNING not in stderr
