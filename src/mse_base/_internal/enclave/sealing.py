"""Which mode sealed a work directory's secrets/, so a run never mixes them up.

SGX seals with a key derived from the CPU and MRENCLAVE; ``--direct`` and ``--simulation`` with
a stand-in derived from a root key in the work directory (simulation.sealing), Gramine's format
under ``--direct``, the bootstrap's own in simulation. Files sealed one way cannot be read another
way (Gramine reports a bare ``Permission denied``), and an app that then deletes and recreates
them destroys what SGX sealed. The mode is recorded in a marker beside secrets/, outside the
enclave's mount, and a run refuses secrets it cannot read before it writes anything.

It also keeps ``--provision`` honest on the host. The enclave restores a sealed state whenever it
finds one (its measured argv cannot tell it otherwise), so ``sealed`` needs one there, and
``push`` or ``pull``, which ask for fresh provisioning, move an earlier one aside first; and
``sealed`` names the mismatch when its options measure another MRENCLAVE than the run that
sealed, rather than start an enclave that cannot unseal: which options changed, or else whether
the code or the environment did (:class:`Measurement`, recorded by the run that may seal).

May import ``mse_base.errors``, the shared ``files`` and ``enclave.size``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mse_base._internal.enclave.size import format_size
from mse_base._internal.files import InputRefused, read_limited, write_atomic
from mse_base.errors import UsageError

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Mode, RunRequest

# In the work directory, beside (not inside) the sealed mount: the enclave never sees them.
SEALED_BY = "secrets.sealed-by"
SEALED_MRENCLAVE = "secrets.sealed-mrenclave"
# What measured it (Measurement): newer than the file above, which older mse-runs read alone.
SEALED_MEASUREMENT = "secrets.sealed-measurement.json"
# Two PEM options of at most 64 KiB each (deployment.MAX_CERTIFICATE_CHAIN) and the rest.
_MEASUREMENT_LIMIT = 1 << 20
_MODES = ("sgx", "simulation", "direct")
_NAMES = {"sgx": "SGX", "simulation": "--simulation", "direct": "--direct"}


def _sealed_by(workdir: Path) -> str | None:
    try:
        text = read_limited(workdir / SEALED_BY, 64, nofollow=True).decode("ascii").strip()
    except InputRefused as err:
        if err.missing:
            return None
        raise UsageError(f"{workdir / SEALED_BY} {err}: remove it") from None
    except UnicodeError:
        text = ""
    if text not in _MODES:
        raise UsageError(
            f"{workdir / SEALED_BY} does not name a mode ({', '.join(_MODES)}): remove it if "
            "secrets/ is empty, or write the mode that sealed it"
        )
    return text


def check_sealed_secrets(
    request: RunRequest, secrets_dir: str, state_name: str, root_key_name: str
) -> None:
    """Refuse a non-empty secrets/ this run's mode cannot read, and a ``--provision`` that does
    not match what is sealed; writes nothing."""
    secrets = request.workdir / secrets_dir
    _check_restart(request, secrets, state_name)
    try:
        empty = not secrets.is_dir() or not any(secrets.iterdir())
    except OSError:
        return  # the work directory's own checks report it
    if empty:
        return
    sealed_by = _sealed_by(request.workdir)
    move = f"move {secrets} away (or delete it), or choose another --workdir"
    # A secrets/ from before the marker existed: taken as this mode's (its only reader until now).
    if sealed_by is not None and sealed_by != request.mode:
        raise UsageError(
            f"{request.workdir_name()}: {secrets_dir}/ holds files sealed under "
            f"{_NAMES[sealed_by]}, which {_NAMES[request.mode]} cannot read: {move}"
        )
    if request.mode != "sgx" and not (request.workdir / root_key_name).exists():
        raise UsageError(
            f"{request.workdir_name()}: {secrets_dir}/ holds sealed files but the stand-in "
            f"sealing key they need ({root_key_name}) is gone, so nothing can read them: {move}"
        )


def _check_restart(request: RunRequest, secrets: Path, state_name: str) -> None:
    if request.restart_sealed and not (secrets / state_name).exists():
        raise UsageError(
            f"--provision sealed: nothing sealed in {secrets} ({request.workdir_name()}): start "
            "the deployment with --provision push or pull first and send it sealed secrets "
            "(mse-secrets push --sealed-secrets, or serve --sealed-secrets)"
        )


def set_aside_sealed_state(request: RunRequest, secrets_dir: str, state_name: str) -> None:
    """Before a push or pull run: move an earlier sealed state out of the enclave's way.

    The enclave restores whatever state it finds (its argv, measured, cannot tell it otherwise),
    so a run that asks for fresh provisioning must not leave one there. It is renamed, never
    deleted: renamed back, ``--provision sealed`` restarts from it again.
    """
    if request.restart_sealed or request.deployment.provision is None:
        return
    state = request.workdir / secrets_dir / state_name
    if not state.exists():
        return
    previous = state.with_name(f"{state_name}.previous")
    state.replace(previous)
    logging.getLogger("mse").warning(
        "--provision %s: the sealed state of an earlier run is set aside as %s (rename it back "
        "and use --provision sealed to restart from it)",
        request.deployment.provision,
        previous,
    )


def record_sealing(workdir: Path, mode: Mode) -> None:
    """Record the mode that seals secrets/ from now on."""
    write_atomic(workdir / SEALED_BY, f"{mode}\n".encode(), 0o644)


@dataclass(frozen=True)
class Measurement:
    """What measured an MRENCLAVE, in the terms of mse-run's options.

    ``options``: (name, value) in order, value None for a flag: ``--size``, each ``--include``,
    then the deployment's argv options (deployment.measured_options). ``code`` and
    ``environment``: digests of the rest of the manifest (manifest.measured_digests);
    ``gramine``: its version, None in simulation (no Gramine measures it).

    Recorded by a push or pull run so a ``sealed`` restart that measures another MRENCLAVE can
    name what changed. Nothing in it is secret (the PEM options are certificates, which the
    enclave shows to anyone; the manifest beside it holds all of it in the clear), and nothing
    trusts it: it only words an error.
    """

    mrenclave: str
    mode: str
    options: tuple[tuple[str, str | None], ...]
    code: str
    environment: str
    gramine: str | None

    @classmethod
    def of(
        cls,
        request: RunRequest,
        mrenclave: bytes,
        digests: tuple[str, str],
        gramine: str | None,
    ) -> Measurement:
        options: list[tuple[str, str | None]] = [("--size", format_size(request.enclave_size))]
        options += [("--include", name) for name in sorted(request.include)]
        options += request.deployment.measured_options()
        code, environment = digests
        return cls(mrenclave.hex(), request.mode, tuple(options), code, environment, gramine)

    def to_json(self) -> str:
        return json.dumps(
            {
                "mrenclave": self.mrenclave,
                "mode": self.mode,
                "options": [list(option) for option in self.options],
                "code": self.code,
                "environment": self.environment,
                "gramine": self.gramine,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Measurement | None:
        """The record, or None when it is not one (it is only ever used to word an error)."""
        try:
            data: Any = json.loads(text)
            options = tuple((str(name), None if value is None else str(value))
                            for name, value in data["options"])  # fmt: skip
            gramine = data["gramine"]
            if data["mode"] not in _MODES:
                return None
            return cls(
                str(data["mrenclave"]),
                data["mode"],
                options,
                str(data["code"]),
                str(data["environment"]),
                None if gramine is None else str(gramine),
            )
        except (ValueError, TypeError, KeyError):
            return None


def record_sealing_enclave(request: RunRequest, measured: Measurement) -> None:
    """After a push or pull run is measured: the MRENCLAVE whose state may be sealed next, and
    what measured it.

    Not secrets, and not trusted: they only let ``--provision sealed`` say what differs before
    it starts an enclave that could not unseal.
    """
    if request.dry_run or request.restart_sealed or request.deployment.provision is None:
        return
    workdir = request.workdir
    write_atomic(workdir / SEALED_MEASUREMENT, f"{measured.to_json()}\n".encode(), 0o644)
    write_atomic(workdir / SEALED_MRENCLAVE, f"{measured.mrenclave}\n".encode(), 0o644)


def check_sealing_enclave(request: RunRequest, measured: Measurement) -> None:
    """``--provision sealed``: refuse a measurement other than the one that sealed, naming what
    changed since the sealing run."""
    if request.dry_run or not request.restart_sealed:
        return
    try:
        raw = read_limited(request.workdir / SEALED_MRENCLAVE, 200, nofollow=True)
    except InputRefused:
        return  # no record (an older work directory): the enclave's own check decides
    recorded = raw.decode("ascii", "replace").strip()
    if recorded == measured.mrenclave:
        return
    head = (
        f"--provision sealed: this command measures MRENCLAVE {measured.mrenclave}, but the "
        f"state in {request.workdir_name()} was sealed by {_printable(recorded[:64])}"
    )
    sealing = _sealing_measurement(request.workdir, recorded)
    changes = [] if sealing is None else changes_between(sealing, measured)
    if not changes:
        # A work directory from before the record, or a change the record does not see.
        raise UsageError(
            f"{head}: repeat the exact options and code of the run that sealed it "
            "(--provision-timeout, --secrets-server, --certificate and the others are measured)"
        )
    raise UsageError(
        f"{head}; changed since that run: {', '.join(changes)}: only the sealing run's options, "
        "code and environment unseal it"
    )


def _sealing_measurement(workdir: Path, mrenclave: str) -> Measurement | None:
    try:
        raw = read_limited(workdir / SEALED_MEASUREMENT, _MEASUREMENT_LIMIT, nofollow=True)
    except InputRefused:
        return None
    measured = Measurement.from_json(raw.decode("utf-8", "replace"))
    # Written with the MRENCLAVE record; another value is a record an older mse-run left stale.
    return measured if measured is not None and measured.mrenclave == mrenclave else None


# The argv's options as mse-run's user gives them, where their names differ.
_SHOWN_AS = {
    "--secrets-server-ca-pem": "--secrets-server-ca",
    "--certificate-pem": "--certificate",
    "--encrypted-code": "--code",
}
# How a flag reads when given and when not.
_FLAG_WORDS = {"--encrypted-code": ("encrypted", "plain")}


def changes_between(sealing: Measurement, now: Measurement) -> list[str]:
    """What differs from the sealing run to this one, as mse-run's user would put it: the
    options that differ (``--port 8443 -> 9443``), then the code, then the environment (unless
    an option explains it: the mode and ``--include`` change the trusted set)."""
    changes = []
    if sealing.mode != now.mode:
        changes.append(f"the mode {_NAMES[sealing.mode]} -> {_NAMES[now.mode]}")
    names = dict.fromkeys(name for name, _ in (*sealing.options, *now.options))
    for name in names:
        before = [value for option, value in sealing.options if option == name]
        after = [value for option, value in now.options if option == name]
        if before != after:
            shown = _SHOWN_AS.get(name, name)
            changes.append(f"{shown} {_values(name, before)} -> {_values(name, after)}")
    if sealing.code != now.code:
        encrypted = ("--encrypted-code", None) in now.options
        again = "; encrypting it again gives other bytes" if encrypted else ""
        changes.append(f"the code (the --code tar's files{again})")
    trusted_set = sealing.mode != now.mode or any(c.startswith("--include ") for c in changes)
    if sealing.environment != now.environment and not trusted_set:
        if sealing.gramine != now.gramine:
            what = f"Gramine {sealing.gramine} -> {now.gramine}"
        else:
            what = "Python, its libraries, the venv's packages or mse-base"
        changes.append(f"the environment ({what}: run the image that sealed it)")
    return changes


def _values(name: str, values: list[str | None]) -> str:
    given, absent = _FLAG_WORDS.get(name, ("given", "not given"))
    if not values:
        return absent
    if values == [None]:
        return given
    if name.endswith("-pem"):
        return ", ".join(_certificate(value or "") for value in values)
    return ", ".join(_printable(value or "") for value in values)


def _certificate(pem: str) -> str:
    """A PEM option by its first certificate: subject and fingerprint, not kilobytes of base64."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        first = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeError):
        digest = hashlib.sha256(pem.encode("utf-8", "replace")).hexdigest()
        return f"(PEM, SHA-256 {digest[:16]})"
    # The prefix of what `openssl x509 -fingerprint -sha256` prints.
    fingerprint = first.fingerprint(hashes.SHA256()).hex()[:16]
    return f"{_printable(first.subject.rfc4514_string())} (SHA-256 {fingerprint})"


def _printable(text: str) -> str:
    """One line, however the record was edited."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= 120 else shown[:117] + "..."
