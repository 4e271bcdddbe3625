"""What MRENCLAVE measures: every option that changes it is marked "(measured)" in ``mse-run
--help`` and named in the README; the port and bind address reach the enclave unmeasured, in two
environment variables the bootstrap checks strictly.

The measured set is derived from the code, not written down: each mse-run option is given a
second value, and the option is measured when that changes what the manifest measures of a run
(``pipeline.enclave_spec``: the bootstrap's argv, size, threads, debug and ISV fields) or the
trusted set's inputs (the code tar and ``--include``). A new option fails the test until it is
given a second value here, and then the help and the README must agree with what it does.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from mse_base._cli import run as run_cli
from mse_base._internal.enclave import manifest as mf
from mse_base._internal.enclave import pipeline
from mse_base._internal.enclave.deployment import listen_from_environment
from mse_base.errors import UsageError
from tests.certs import self_signed_pem

from .conftest import BIN, FLASK_APP, future_epoch, make_deployment, make_tar, run_args

ROOT = Path(__file__).resolve().parents[2]
UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"
# Options that only act (print and exit): they have no run to measure.
_EXITING = {"--help", "--version"}
# Named by the issue as never measured: a check of the derivation itself.
_NEVER_MEASURED = {
    "--port", "--bind", "--workdir", "--json", "--force", "--dry-run", "--memory", "--signer-key",
}  # fmt: skip


def _variants(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per mse-run option: the extra arguments of a run without it and of one with it (or with
    another value for it). Appended to a base command line; argparse keeps an option's last
    value, so a variant may override the base's."""
    tar = make_tar(tmp / "other.tar", {"app.py": FLASK_APP + "# another app\n"})
    chains = [self_signed_pem(tmp, name)[0] for name in ("chain-a", "chain-b")]
    cas = [self_signed_pem(tmp, name)[0] for name in ("ca-a", "ca-b")]
    pull = ["--provision", "pull", "--secrets-server", "https://10.0.0.1:8443"]
    return {
        "--size": ([], ["--size", "2G"]),
        "--code": ([], ["--code", str(tar)]),
        "--host": ([], ["--host", "app.example.com"]),
        "--application": ([], ["--application", "app:other"]),
        "--uuid": ([], ["--uuid", str(uuid.UUID(int=1))]),
        "--self-signed": ([], ["--self-signed", future_epoch(60)]),
        "--certificate": (
            ["--certificate", str(chains[0]), "--provision", "push"],
            ["--certificate", str(chains[1]), "--provision", "push"],
        ),
        "--port": ([], ["--port", "8443"]),
        "--bind": ([], ["--bind", "::1"]),
        "--workdir": ([], ["--workdir", str(tmp / "elsewhere")]),
        "--signer-key": ([], ["--signer-key", str(tmp / "enclave-key.pem")]),
        "--dry-run": ([], ["--dry-run"]),
        "--memory": ([], ["--memory"]),
        "--debug": ([], ["--debug"]),
        "--force": ([], ["--force"]),
        "--simulation": ([], ["--simulation"]),
        "--direct": ([], ["--direct"]),
        "--include": ([], ["--include", "pip"]),
        "--json": ([], ["--json"]),
        "--provision": ([], ["--provision", "push"]),
        "--secrets-server": (
            [*pull, "--secrets-server-ca", str(cas[0])],
            [*pull[:-1], "https://10.0.0.2:8443", "--secrets-server-ca", str(cas[0])],
        ),
        "--secrets-server-ca": (
            [*pull, "--secrets-server-ca", str(cas[0])],
            [*pull, "--secrets-server-ca", str(cas[1])],
        ),
        "--provision-timeout": (
            ["--provision", "push"],
            ["--provision", "push", "--provision-timeout", "30"],
        ),
        "--subject": ([], ["--subject", "CN=app.example.com,O=Example Corp"]),
        "--san": ([], ["--san", "other.example"]),
    }


def _measured_inputs(argv: list[str], python: mf.PythonLayout) -> tuple[object, ...]:
    """What the run's MRENCLAVE depends on among its options, as mse-run computes it."""
    request = run_cli.run_request(run_cli._run_parser().parse_args(argv))
    spec = pipeline.enclave_spec(request, python)
    return spec, request.include, hashlib.sha256(request.code.read_bytes()).hexdigest()


def _measured_options(tmp: Path) -> tuple[set[str], set[str]]:
    """(measured, not measured) among mse-run's options, by what each one does."""
    tar = make_tar(tmp / "app.tar", {"app.py": FLASK_APP})
    base = [
        *("--size", "1G", "--code", str(tar), "--host", "localhost"),
        *("--application", "app:app", "--uuid", UUID),
    ]
    python = mf.PythonLayout.current()
    options = {
        max(action.option_strings, key=len)
        for action in run_cli._run_parser()._actions
        if action.option_strings
    } - _EXITING
    variants = _variants(tmp)
    assert set(variants) == options, "give each new mse-run option a second value here"
    measured: set[str] = set()
    for option, (without, with_) in variants.items():
        runs = []
        for extra in (without, with_):
            certificate = "--certificate" in extra
            expiry = [] if certificate else ["--self-signed", future_epoch()]
            runs.append(_measured_inputs([*base, *expiry, *extra], python))
        if runs[0] != runs[1]:
            measured.add(option)
    return measured, options - measured


def _help_by_option(text: str) -> dict[str, str]:
    """Each option's help text in ``--help`` output, its wrapped lines joined."""
    helps: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        start = re.match(r"^  (?:-\w, )?(--[\w-]+)", line)
        if start:
            current = start.group(1)
            helps[current] = line[start.end() :]
        elif current is not None and line.startswith("    "):
            helps[current] += " " + line.strip()
        else:
            current = None
    return helps


def _readme_measured_sentence() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"Measured, besides the image and the tar(.*?)\.\s+[A-Z]", readme, re.S)
    assert found, "README: the sentence 'Measured, besides the image and the tar...' is gone"
    return found.group(1)


def test_help_and_readme_name_exactly_the_measured_options(tmp_path: Path) -> None:
    measured, unmeasured = _measured_options(tmp_path)
    assert not _NEVER_MEASURED & measured
    # The derivation sees the argv, the manifest's own fields and the trusted set's inputs.
    assert {"--application", "--size", "--code", "--include", "--san"} <= measured

    shown = subprocess.run(
        [str(BIN / "mse-run"), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
        check=True,
    ).stdout
    helps = _help_by_option(shown)
    assert set(helps) >= measured | unmeasured
    marked = {option for option, text in helps.items() if "(measured)" in text}
    assert marked == measured, (
        f"marked but not measured: {sorted(marked - measured)}; "
        f"measured but not marked: {sorted(measured - marked)}"
    )

    named = set(re.findall(r"`(--[a-z-]+)", _readme_measured_sentence()))
    assert named == measured, (
        f"README names but not measured: {sorted(named - measured)}; "
        f"measured but not named: {sorted(measured - named)}"
    )


def test_the_bind_default_follows_the_mode(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "app.tar", {"app.py": FLASK_APP})

    def bind(*extra: str) -> str:
        args = run_cli._run_parser().parse_args([*run_args(tar, tmp_path / "wd")[1:], *extra])
        return run_cli.run_request(args).deployment.bind

    assert bind() == "0.0.0.0"  # SGX: the image's default
    assert bind("--simulation") == "127.0.0.1"
    assert bind("--direct") == "127.0.0.1"
    assert bind("--direct", "--bind", "0.0.0.0") == "0.0.0.0"


# --- the port and bind address, unmeasured ------------------------------------------------------


def _dry_run_mrenclave(tar: Path, workdir: Path, env: dict[str, str], *extra: str) -> str:
    args = [*run_args(tar, workdir), "--simulation", "--dry-run", *extra]
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1]


def test_port_and_bind_do_not_change_mrenclave_and_host_does(
    flask_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    base = _dry_run_mrenclave(flask_tar, tmp_path / "base", env)
    elsewhere = ("--port", "8443", "--bind", "::1")
    assert _dry_run_mrenclave(flask_tar, tmp_path / "other", env, *elsewhere) == base
    assert _dry_run_mrenclave(flask_tar, tmp_path / "host", env, "--host", "example.com") != base
    manifest = tomllib.loads((tmp_path / "other" / "mse.manifest").read_text())
    argv = manifest["loader"]["argv"]
    assert "--port" not in argv and "--bind" not in argv and "8443" not in argv
    env_table = manifest["loader"]["env"]
    assert env_table["MSE_PORT"] == env_table["MSE_BIND"] == {"passthrough": True}
    assert "insecure__use_host_env" not in manifest["loader"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("0.0.0.0", 443)),
        ({"MSE_PORT": "1", "MSE_BIND": "127.0.0.1"}, ("127.0.0.1", 1)),
        ({"MSE_PORT": "65535", "MSE_BIND": "0:0::0:1"}, ("::1", 65535)),
    ],
)
def test_listening_variables_accepted(environ: dict[str, str], expected: tuple[str, int]) -> None:
    assert listen_from_environment(environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"MSE_PORT": value}
        # Arabic-Indic digits, which int() takes.
        for value in ("", "0", "65536", "0443", "+443", " 443", "443\n", "4_43", "\u0664" * 3)
    ]
    + [
        {"MSE_BIND": value}
        for value in ("", "localhost", "127.0.0.1 ", "1.2.3", "fe80::1%lo", "0.0.0.0:443")
    ],
)
def test_listening_variables_refused(environ: dict[str, str]) -> None:
    name, value = next(iter(environ.items()))
    with pytest.raises(UsageError) as err:
        listen_from_environment(environ)
    assert str(err.value).startswith(f"{name}={value!r} is not ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"), [("MSE_PORT", "http"), ("MSE_BIND", "example.com"), ("MSE_PORT", "9" * 500)]
)
def test_the_bootstrap_refuses_a_bad_listening_variable_first(name: str, value: str) -> None:
    """One line and exit 2, before anything else (without the variable it would stop later, for
    lack of an enclave to attest it)."""
    result = subprocess.run(
        [sys.executable, "-I", "-B", "-m", "mse_base._bootstrap",
         *make_deployment().bootstrap_args()],
        capture_output=True, text=True, env={name: value}, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mse-bootstrap: error: {name}="), lines
    assert len(lines[0]) < 300  # a long value is cut short


def test_the_manifest_lets_only_the_listening_variables_through() -> None:
    python = mf.PythonLayout.current()
    spec = mf.EnclaveSpec(1 << 30, 32, False, 0, 0, ("python3", "-m", "mse_base._bootstrap"))
    trusted = mf.TrustedSet(
        [mf.TrustedFile(f"file:{python.executable}", "0" * 64, 1),
         mf.TrustedFile("file:code/app.py", "0" * 64, 1)]
    )  # fmt: skip
    manifest = mf.build_manifest(spec, python, mf.GramineLayout.default(), trusted)
    mf.validate(manifest, spec)
    for change in (
        {"insecure__use_host_env": True},
        {"env_src_file": "file:env"},
        {"env": {**manifest["loader"]["env"], "PYTHONPATH": {"passthrough": True}}},
        {"env": {**manifest["loader"]["env"], "MSE_PORT": "443"}},
    ):
        changed = copy.deepcopy(manifest)
        changed["loader"].update(change)
        with pytest.raises(mf.ManifestError):
            mf.validate(changed, spec)
