"""Which mode sealed a work directory's secrets/, so a run never mixes them up.

SGX seals with a key derived from the CPU and MRENCLAVE, ``--direct`` with a throwaway key made
for one run, and ``--simulation`` does not encrypt at all. Files sealed one way cannot be read
another way (Gramine reports a bare ``Permission denied``), and an app that then deletes and
recreates them destroys what SGX sealed. The mode is recorded in a marker beside secrets/, outside
the enclave's mount, and a run refuses secrets it cannot read before it writes anything.

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


def check_sealed_secrets(request: RunRequest, secrets_dir: str) -> None:
    """Refuse a non-empty secrets/ this run's mode cannot read; writes nothing."""
    secrets = request.workdir / secrets_dir
    try:
        empty = not secrets.is_dir() or not any(secrets.iterdir())
    except OSError:
        return  # the work directory's own checks report it
    if empty:
        return
    sealed_by = _sealed_by(request.workdir)
    move = f"move {secrets} away (or delete it), or choose another --workdir"
    if request.mode == "direct":
        how = "" if sealed_by is None else f" under {_NAMES[sealed_by]}"
        raise UsageError(
            f"{request.workdir_name()}: {secrets_dir}/ holds files sealed by an earlier run{how}; "
            f"--direct seals with a new throwaway key each run, so it cannot read them: {move}"
        )
    # A secrets/ from before the marker existed: taken as this mode's (its only reader until now).
    if sealed_by is not None and sealed_by != request.mode:
        raise UsageError(
            f"{request.workdir_name()}: {secrets_dir}/ holds files sealed under "
            f"{_NAMES[sealed_by]}, which {_NAMES[request.mode]} cannot read: {move}"
        )


def record_sealing(workdir: Path, mode: Mode) -> None:
    """Record the mode that seals secrets/ from now on."""
    write_atomic(workdir / SEALED_BY, f"{mode}\n".encode(), 0o644)
