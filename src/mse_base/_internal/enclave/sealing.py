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
sealed, rather than start an enclave that cannot unseal.

May import ``mse_base.errors`` and the shared ``files``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mse_base._internal.files import InputRefused, read_limited, write_atomic
from mse_base.errors import UsageError

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Mode, RunRequest

# In the work directory, beside (not inside) the sealed mount: the enclave never sees them.
SEALED_BY = "secrets.sealed-by"
SEALED_MRENCLAVE = "secrets.sealed-mrenclave"
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


def record_sealing_enclave(request: RunRequest, mrenclave: bytes) -> None:
    """After a push or pull run is measured: the MRENCLAVE whose state may be sealed next.

    Not a secret, and not trusted: it only lets ``--provision sealed`` say which options
    differ before it starts an enclave that could not unseal.
    """
    if request.dry_run or request.restart_sealed or request.deployment.provision is None:
        return
    write_atomic(request.workdir / SEALED_MRENCLAVE, f"{mrenclave.hex()}\n".encode(), 0o644)


def check_sealing_enclave(request: RunRequest, mrenclave: bytes) -> None:
    """``--provision sealed``: refuse a measurement other than the one that sealed."""
    if request.dry_run or not request.restart_sealed:
        return
    try:
        raw = read_limited(request.workdir / SEALED_MRENCLAVE, 200, nofollow=True)
    except InputRefused:
        return  # no record (an older work directory): the enclave's own check decides
    recorded = raw.decode("ascii", "replace").strip()
    if recorded != mrenclave.hex():
        raise UsageError(
            f"--provision sealed: this command measures MRENCLAVE {mrenclave.hex()}, but the "
            f"state in {request.workdir_name()} was sealed by {recorded[:64]}: repeat the exact "
            "options and code of the run that sealed it (--provision-timeout, --secrets-server, "
            "--certificate and the others are measured)"
        )
