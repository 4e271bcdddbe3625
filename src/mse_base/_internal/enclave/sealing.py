"""Which mode sealed a work directory's secrets/, so a run never mixes them up.

SGX seals with a key derived from the CPU and MRENCLAVE; ``--direct`` and ``--simulation`` with
a stand-in derived from a root key in the work directory (simulation.sealing), Gramine's format
under ``--direct``, the bootstrap's own in simulation. Files sealed one way cannot be read another
way (Gramine reports a bare ``Permission denied``), and an app that then deletes and recreates
them destroys what SGX sealed. The mode is recorded in a marker beside secrets/, outside the
enclave's mount, and a run refuses secrets it cannot read before it writes anything.

It also keeps ``--provision sealed`` honest on the host: a restart needs a sealed state to
restart from, and a push or pull deployment that has one restarts from it (the enclave cannot be
told otherwise: its argv is measured), so mse-run asks for ``sealed`` rather than pretend.

May import ``mse_base.errors`` and the shared ``files``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mse_base._internal.files import InputRefused, read_limited, write_atomic
from mse_base.errors import UsageError

if TYPE_CHECKING:
    from mse_base._internal.enclave.pipeline import Mode, RunRequest

# In the work directory, beside (not inside) the sealed mount: the enclave never sees it.
SEALED_BY = "secrets.sealed-by"
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
    sealed = (secrets / state_name).exists()
    if request.restart_sealed and not sealed:
        raise UsageError(
            f"--provision sealed: nothing sealed in {secrets} ({request.workdir_name()}): start "
            "the deployment with --provision push or pull first and send it sealed secrets "
            "(mse-secrets push --sealed-secrets, or serve --sealed-secrets)"
        )
    if not request.restart_sealed and request.deployment.provision is not None and sealed:
        raise UsageError(
            f"{request.workdir_name()} holds this deployment's sealed state "
            f"({secrets / state_name}), which the enclave restarts from: pass --provision sealed "
            f"(with the same other options), or remove that file to provision it again"
        )


def record_sealing(workdir: Path, mode: Mode) -> None:
    """Record the mode that seals secrets/ from now on."""
    write_atomic(workdir / SEALED_BY, f"{mode}\n".encode(), 0o644)
