"""mse-run's pipeline: unpack, manifest, sign, read the identity, launch.

SGX and simulation share every step except two: who computes MRENCLAVE and signs the SIGSTRUCT
(``gramine-sgx-sign``, or :mod:`measure` plus our own SIGSTRUCT writer) and what runs the
bootstrap (``gramine-sgx``, or a plain child process with the simulation quote provider). Both
read the identity back from the SIGSTRUCT file with the same parser. ``--direct`` signs as SGX
does and runs that same manifest under ``gramine-direct`` (Gramine's LibOS without SGX), with a
quote from the simulation PKI carrying the real measurement (see simulation.direct).

The work directory is held with a lock from the first thing mse-run does with it until the last
process of the run exits, the enclave's included (:class:`WorkdirLock`): a second mse-run on it
is refused while either lives, and only a run that holds the lock removes the enclave memory a
crashed simulation left in the clear. The simulation's and ``--direct``'s enclave process is
killed by the kernel when mse-run dies, however it dies (:func:`_die_with_mse_run`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from mse_base._internal.enclave import manifest as mf
from mse_base._internal.enclave.codetar import inspect_code, unpack_code
from mse_base._internal.enclave.deployment import Deployment
from mse_base._internal.enclave.measure import simulated_mrenclave
from mse_base._internal.enclave.requirements import app_requirements, check_requirements
from mse_base._internal.enclave.sealing import (
    Measurement,
    check_sealed_secrets,
    check_sealing_enclave,
    record_sealing,
    record_sealing_enclave,
    set_aside_sealed_state,
)
from mse_base._internal.enclave.signer import (
    THROWAWAY_KEY_NAME,
    SignerKey,
    default_key_path,
    load_signer_key,
    throwaway_signer_key,
)
from mse_base._internal.enclave.sigstruct import Sigstruct, build_sigstruct, parse_sigstruct
from mse_base._internal.extras import owner_tools
from mse_base._internal.files import write_private
from mse_base.errors import EnvironmentMissing, Error, UsageError

Mode = Literal["sgx", "simulation", "direct"]
# Where the work directory came from, for messages: the option, the default under
# $XDG_STATE_HOME or under ~/.local/state, or a temporary directory (a --dry-run without
# --workdir).
WorkdirSource = Literal["--workdir", "XDG_STATE_HOME", "HOME", "temporary"]
MANIFEST_NAME = "mse"
# Threads the serving runtime may start, plus Gramine's internal ones (IPC, async, TLS handshake).
MAX_THREADS = 32
SIMULATION_STATE = "simulation.json"
# The stand-in sealing key's root without SGX (simulation.sealing owns it; named here because
# mse-run keeps it across --force with the secrets it seals).
SEALING_ROOT_KEY_NAME = "sealing-root.key"
# The simulated enclave's TLS key and certificate, removed when it stops.
SIMULATION_TLS_DIR = "tls"
BOOTSTRAP_MODULE = "mse_base._bootstrap"


@dataclass(frozen=True)
class RunRequest:
    deployment: Deployment
    enclave_size: int
    code: Path
    workdir: Path
    signer_key: Path | None
    dry_run: bool
    force: bool
    mode: Mode
    workdir_source: WorkdirSource = "--workdir"
    # Optional parts of Python trusted after all (mse-run --include; see manifest.OPTIONAL_PARTS).
    include: frozenset[str] = frozenset()
    # --provision sealed: the deployment's own measured mode, restarted from its sealed state.
    restart_sealed: bool = False

    def workdir_name(self) -> str:
        """The work directory as the user knows it: by the option, or as the default one."""
        return workdir_name(self.workdir, self.workdir_source)


def workdir_name(workdir: Path, source: WorkdirSource) -> str:
    """A work directory as the user knows it: by the option, or as the default one."""
    if source == "--workdir":
        return f"--workdir {workdir}"
    if source == "temporary":
        return f"the temporary work directory ({workdir})"
    return f"the default work directory ({workdir})"


@dataclass(frozen=True)
class WorkdirLock:
    """An exclusive ``flock`` on the work directory itself, held through ``fd``.

    A lock on the directory, not on a file in it, so it adds nothing to the directory (whose
    being empty or not decides what a run may do). ``flock`` belongs to the open file
    description: the enclave process inherits the descriptor (``pass_fds``), so the lock is free
    only once mse-run and its enclave have both exited, and the kernel frees it however they
    exit. Under SGX mse-run becomes ``gramine-sgx`` and the descriptor closes on that exec.
    """

    fd: int


def lock_workdir(workdir: Path, name: str) -> WorkdirLock | None:
    """Lock an existing work directory and remove what a crashed run left in the clear.

    The first thing mse-run does with a work directory, before it reads the code or writes
    anything. None when the directory does not exist yet (it is locked once made, see
    :func:`_claim_workdir`). Refused when another mse-run or its enclave holds it: a live
    simulated enclave's memory is its own. The sealed state is never touched here.
    """
    if not workdir.is_dir():
        return None  # absent, or not a directory: _claim_workdir says which
    lock = _lock(workdir, name)
    _remove_crashed_memory(workdir)
    return lock


def _lock(workdir: Path, name: str) -> WorkdirLock:
    # A run that fails may remove a directory it made and the next one make it anew: a lock
    # taken on the old directory would hold nothing, so it must be on the one at the path now.
    for _ in range(3):
        try:
            fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise UsageError(
                f"{name}: cannot use it ({err.strerror or err}); choose a readable directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, current = os.fstat(fd), workdir.stat()
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(
                    f"{name} is in use by another mse-run or its enclave: stop it first, or "
                    "choose another --workdir"
                ) from None
            if err.errno == errno.ENOENT:
                continue  # removed meanwhile
            raise UsageError(
                f"{name}: cannot lock it ({err.strerror or err}); choose a directory on a "
                "local file system"
            ) from None
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return WorkdirLock(fd)
        os.close(fd)
    raise UsageError(f"{name} is being replaced by another mse-run: try again")


def _remove_crashed_memory(workdir: Path) -> None:
    """Remove the simulated enclave memory a run left behind when it was killed.

    Its enclave removes it when it stops and mse-run when the enclave dies; only a run that
    could do neither (mse-run killed with SIGKILL, the machine lost) leaves it, with the TLS
    key, the provisioned secrets and the decrypted code in the clear. The caller holds the
    lock, so no live enclave uses it.
    """
    memory = workdir / SIMULATION_TLS_DIR
    if not memory.exists() and not memory.is_symlink():
        return
    try:
        if memory.is_dir() and not memory.is_symlink():
            shutil.rmtree(memory)
        else:
            memory.unlink()
    except OSError as err:
        raise UsageError(
            f"{memory}: cannot remove the enclave memory a crashed run left in the clear "
            f"({err.strerror or err}); remove it by hand"
        ) from None
    logging.getLogger("mse").warning(
        "removed %s: the simulated enclave memory (TLS key, provisioned secrets, decrypted code) "
        "left in the clear by a run that crashed",
        memory,
    )


@dataclass(frozen=True)
class WorkdirClaim:
    """What this run did to its work directory, so a failed run can undo it.

    ``fresh``: it held nothing before this run (absent or empty), so nothing in it now is worth
    keeping if the run fails before the enclave serves. ``created``: the directories this run
    made, the work directory itself first, then the missing parents it needed. ``lock``: held
    until the run and its enclave exit.
    """

    fresh: bool
    created: tuple[Path, ...]
    lock: WorkdirLock


@dataclass(frozen=True)
class Prepared:
    request: RunRequest
    sigstruct: Sigstruct
    signer: SignerKey
    trusted_files: int
    trusted_bytes: int
    argv: tuple[str, ...]
    claim: WorkdirClaim
    # The owner's or test tools measured with the app, which it does not need (extras).
    owner_tools: tuple[str, ...] = ()

    @property
    def simulated(self) -> bool:
        """Whether MRENCLAVE is simulated (only --simulation; --direct has the real one)."""
        return self.request.mode == "simulation"

    def summary(self) -> dict[str, Any]:
        return {
            "mrenclave": self.sigstruct.mrenclave.hex(),
            "mrsigner": self.sigstruct.mrsigner.hex(),
            "isv_prod_id": self.sigstruct.isv_prod_id,
            "isv_svn": self.sigstruct.isv_svn,
            "debug": self.sigstruct.debug,
            "enclave_size": self.request.enclave_size,
            "trusted_files": self.trusted_files,
            "trusted_bytes": self.trusted_bytes,
            "mode": self.request.mode,
            # No SGX hardware involved: a simulated measurement, or (--direct) a simulated quote.
            "simulated": self.request.mode != "sgx",
            # What MRENCLAVE is, as mse-verify's JSON says it: only --simulation's is simulated.
            "measurement": "simulated" if self.simulated else "real",
            "mrsigner_meaningful": not self.signer.throwaway,
            # A temporary work directory is gone by the time anyone reads this.
            "workdir": (
                None if self.request.workdir_source == "temporary" else str(self.request.workdir)
            ),
        }


_GRAMINE_MISSING = (
    "Gramine is not installed: install the gramine package (Gramine 1.9, which provides "
    "gramine-sgx-sign and gramine-direct), run mse-run in the mse-base image, which ships it, or "
    "add --simulation to try the pipeline without Gramine"
)


def require_gramine(mode: Mode, dry_run: bool) -> None:
    """Fail before touching anything when SGX or --direct lacks Gramine or the SGX device."""
    if mode == "simulation":
        return
    runner = "gramine-direct" if mode == "direct" else "gramine-sgx"
    tools = ["gramine-sgx-sign"] + ([] if dry_run else [runner])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise EnvironmentMissing(f"{', '.join(missing)} not found. {_GRAMINE_MISSING}")
    if mode == "direct" or dry_run:
        return
    if not any(Path(p).exists() for p in ("/dev/sgx_enclave", "/dev/sgx/enclave")):
        raise EnvironmentMissing(
            "no SGX device (/dev/sgx_enclave): run on an SGX machine with "
            "`docker run --device /dev/sgx_enclave --device /dev/sgx_provision "
            "-v /var/run/aesmd:/var/run/aesmd ...`, or add --direct (Gramine without SGX) or "
            "--simulation"
        )


# Everything mse-run derives from the tar; sealed secrets (mf.HOST_SECRETS_DIR) are not in it.
_DERIVED_FILES = ("cert.pem", SIMULATION_STATE, THROWAWAY_KEY_NAME)


def _prepare_workdir(request: RunRequest, lock: WorkdirLock | None) -> WorkdirClaim:
    try:
        return _claim_workdir(request, lock)
    except OSError as err:
        raise UsageError(_unusable_workdir(request, err)) from None


def _claim_workdir(request: RunRequest, lock: WorkdirLock | None) -> WorkdirClaim:
    workdir = request.workdir
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"{request.workdir_name()} exists and is not a directory")
    missing: list[Path] = []
    path = workdir
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Judged under the lock: whatever another run does to the directory, it does first or not
    # at all. A directory that held nothing is fresh whoever made it.
    lock = lock or lock_workdir(workdir, request.workdir_name())
    assert lock is not None  # the directory exists now
    fresh = True
    if any(workdir.iterdir()):
        fresh = False
        if not request.force:
            if request.workdir_source == "--workdir":
                earlier, other = "an earlier run?", "choose another --workdir"
            else:
                earlier, other = "an earlier run with this --uuid?", "pass --workdir DIR"
            raise UsageError(
                f"{request.workdir_name()} is not empty ({earlier}): add --force to replace "
                f"its code and manifest, or {other}"
            )
        # Sealed secrets survive a forced restart; everything derived from the tar does not.
        for name in (mf.HOST_CODE_DIR, f"{mf.HOST_CODE_DIR}.partial", SIMULATION_TLS_DIR):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in _DERIVED_FILES:
            (workdir / name).unlink(missing_ok=True)
        for manifest in workdir.glob(f"{MANIFEST_NAME}.*"):
            manifest.unlink()
    return WorkdirClaim(fresh=fresh, created=tuple(missing), lock=lock)


def _unusable_workdir(request: RunRequest, err: OSError) -> str:
    reason = err.strerror or str(err)
    if request.workdir_source == "--workdir":
        return f"--workdir {request.workdir}: cannot use it ({reason}); choose a writable directory"
    if request.workdir_source == "XDG_STATE_HOME":
        state = os.environ.get("XDG_STATE_HOME", "")
        return (
            f"{request.workdir_name()} cannot be created ({reason}): set XDG_STATE_HOME "
            f"(now {state}) to a writable directory, or pass --workdir DIR"
        )
    if request.workdir_source == "HOME":
        return (
            f"{request.workdir_name()} cannot be created ({reason}): set XDG_STATE_HOME to a "
            "writable directory, or pass --workdir DIR"
        )
    return f"{request.workdir_name()} cannot be used ({reason}): set TMPDIR or pass --workdir DIR"


def discard_workdir(workdir: Path, claim: WorkdirClaim) -> None:
    """Undo what a failed run wrote, when the work directory held nothing before it.

    So the next run (the same --uuid gives the same default directory) does not need --force.
    A directory that held anything before (an earlier deployment's sealed secrets) is left as it
    is; of the parents this run made, only those left empty are removed (another run may be
    using them).
    """
    if not claim.fresh:
        return
    if workdir in claim.created:
        shutil.rmtree(workdir, ignore_errors=True)
    elif workdir.is_dir():
        for entry in workdir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    for parent in claim.created:
        if parent == workdir:
            continue
        try:
            parent.rmdir()
        except OSError:
            break


def _signer(request: RunRequest) -> SignerKey | None:
    """The signing key, or None when a throwaway key is allowed and nothing else exists.

    Runs before anything is written, so a bad key leaves no work directory behind.
    """
    path = request.signer_key or default_key_path()
    if request.signer_key is None and not path.exists():
        if request.dry_run or request.mode != "sgx":
            return None
        raise UsageError(
            f"no enclave signing key at {path}: mount yours there (RSA-3072, e=3), "
            "or pass --signer-key PATH"
        )
    return load_signer_key(path)


def prepare(
    request: RunRequest,
    progress: Callable[[int, int], None] | None = None,
    lock: WorkdirLock | None = None,
) -> Prepared:
    """Everything up to (not including) launching: the enclave's identity is known after this.

    ``lock``: the work directory's, when :func:`lock_workdir` took it already.
    """
    inspect_code(request.code)
    require_gramine(request.mode, request.dry_run)
    key = _signer(request)
    python = mf.PythonLayout.current()
    if not request.dry_run:
        # Before --force clears anything: sealed secrets this mode cannot read are refused.
        check_sealed_secrets(
            request, mf.HOST_SECRETS_DIR, mf.SEALED_STATE_NAME, SEALING_ROOT_KEY_NAME
        )
    claim = _prepare_workdir(request, lock)
    try:
        return _prepare_in(request, python, key, claim, progress)
    except BaseException:
        # Nothing ran yet: a fresh work directory left behind would only make the next run with
        # the same --uuid fail for being "not empty".
        discard_workdir(request.workdir, claim)
        raise


def _prepare_in(
    request: RunRequest,
    python: mf.PythonLayout,
    key: SignerKey | None,
    claim: WorkdirClaim,
    progress: Callable[[int, int], None] | None,
) -> Prepared:
    code_dir = request.workdir / mf.HOST_CODE_DIR
    unpack_code(request.code, code_dir)
    check_requirements(code_dir)
    mf.write_name_files(request.workdir)
    # Encrypted code is staged unread: its requirements are not known here.
    tools = owner_tools(python.site_packages, app_requirements(code_dir))
    secrets = request.workdir / mf.HOST_SECRETS_DIR
    secrets.mkdir(mode=0o700, exist_ok=True)
    if not request.dry_run:
        record_sealing(request.workdir, request.mode)
        set_aside_sealed_state(request, mf.HOST_SECRETS_DIR, mf.SEALED_STATE_NAME)
    signer = key or throwaway_signer_key(request.workdir)
    spec = enclave_spec(request, python)
    options = request.deployment.bootstrap_args()
    gramine = mf.GramineLayout.detect()
    if gramine is None and request.mode != "simulation":
        raise EnvironmentMissing(_GRAMINE_MISSING)
    trusted = mf.collect_trusted_files(
        python,
        request.workdir,
        progress,
        runtime_dir=None if gramine is None else gramine.runtime_dir,
        include=request.include,
    )
    gramine = gramine or mf.GramineLayout.default()
    manifest = mf.build_manifest(spec, python, gramine, trusted)
    mf.validate(manifest, spec)
    manifest_text = mf.dumps(manifest)
    manifest_path = request.workdir / f"{MANIFEST_NAME}.manifest"
    manifest_path.write_text(manifest_text, encoding="utf-8")
    sig_path = request.workdir / f"{MANIFEST_NAME}.sig"
    if request.mode != "simulation":
        _gramine_sign(request.workdir, manifest_path, sig_path, signer)
    else:
        mrenclave = simulated_mrenclave(manifest_text, spec.enclave_size, spec.max_threads)
        sig_path.write_bytes(
            build_sigstruct(
                key=signer.key,
                mrenclave=mrenclave,
                isv_prod_id=spec.isv_prod_id,
                isv_svn=spec.isv_svn,
                debug=spec.debug,
            )
        )
    sigstruct = parse_sigstruct(sig_path.read_bytes())
    version = None if request.mode == "simulation" else gramine.version
    digests = mf.measured_digests(manifest, len(options), version)
    measured = Measurement.of(request, sigstruct.mrenclave, digests, version)
    check_sealing_enclave(request, measured)
    record_sealing_enclave(request, measured)
    return Prepared(
        request,
        sigstruct,
        signer,
        len(trusted.files),
        trusted.total_bytes,
        spec.argv,
        claim,
        tuple(tools),
    )


def enclave_spec(request: RunRequest, python: mf.PythonLayout) -> mf.EnclaveSpec:
    """What the manifest measures of the request, besides the trusted files (the code and
    ``include``): the bootstrap's command line, the enclave size, threads, debug and ISV fields.
    The listening address is not in it (``Deployment.listen_environment``)."""
    argv = (
        str(python.venv_python),
        "-I",
        "-B",
        "-m",
        BOOTSTRAP_MODULE,
        *request.deployment.bootstrap_args(),
    )
    return mf.EnclaveSpec(
        enclave_size=request.enclave_size,
        max_threads=MAX_THREADS,
        debug=request.deployment.debug,
        isv_prod_id=0,
        isv_svn=0,
        argv=argv,
    )


def _gramine_sign(workdir: Path, manifest: Path, sig: Path, signer: SignerKey) -> None:
    # cwd=workdir: the app's trusted-file URIs are relative to it (see manifest.HOST_CODE_DIR).
    result = subprocess.run(
        [
            "gramine-sgx-sign",
            "--manifest",
            manifest.name,
            "--output",
            f"{manifest.name}.sgx",
            "--sigfile",
            sig.name,
            "--key",
            # Absolute: gramine-sgx-sign runs in the work directory, and a relative --workdir
            # (or --signer-key) would name the key from the wrong place.
            str(signer.path.resolve()),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Error(f"gramine-sgx-sign failed: {tail[0]}")


def launch_sgx(prepared: Prepared) -> NoReturn:
    """Become ``gramine-sgx``: signals and the exit status then belong to the enclave itself."""
    # Relative trusted-file URIs (the app, the sealed secrets) resolve from the work directory.
    os.chdir(prepared.request.workdir)
    sys.stdout.flush()
    sys.stderr.flush()
    env = enclave_environment(prepared)
    os.execvpe("gramine-sgx", ["gramine-sgx", MANIFEST_NAME], env)  # noqa: S606


def enclave_environment(prepared: Prepared) -> dict[str, str]:
    """The environment the enclave is started in: ours, with the listening address.

    Under Gramine only the manifest's passthrough variables reach the enclave (the port and bind
    address); the simulation's plain child process sees all of it.
    """
    return {**os.environ, **prepared.request.deployment.listen_environment()}


def simulation_environment(prepared: Prepared, sealing_key: bytes) -> dict[str, str]:
    """Write the simulated platform's state and return the child's environment.

    Inside SGX the bootstrap learns its identity from the CPU; in simulation it reads it from this
    file, which is why only the simulation looks at ``MSE_SIMULATION``.
    """
    workdir = prepared.request.workdir
    state = {
        "mrenclave": prepared.sigstruct.mrenclave.hex(),
        "mrsigner": prepared.sigstruct.mrsigner.hex(),
        "isv_prod_id": prepared.sigstruct.isv_prod_id,
        "isv_svn": prepared.sigstruct.isv_svn,
        "debug": prepared.sigstruct.debug,
        "code_dir": str((workdir / mf.HOST_CODE_DIR).resolve()),
        "tls_dir": str((workdir / SIMULATION_TLS_DIR).resolve()),
        "secrets_dir": str((workdir / mf.HOST_SECRETS_DIR).resolve()),
        "sealing_key": sealing_key.hex(),
    }
    path = workdir / SIMULATION_STATE
    # Replaced, not written through: whatever is at the path (a FIFO would block a plain open)
    # is swapped for the new file; 0600 for the stand-in sealing key.
    write_private(path, json.dumps(state, indent=2).encode())
    env = enclave_environment(prepared)
    env["MSE_SIMULATION"] = str(path.resolve())
    return env


def simulation_certificate(prepared: Prepared) -> Path:
    """Where the simulated enclave writes its certificate, before it binds its port."""
    return prepared.request.workdir / SIMULATION_TLS_DIR / mf.TLS_CERT_NAME


# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def _die_with_mse_run() -> Callable[[], None]:
    """What the enclave's process runs between fork and exec: it dies when mse-run dies.

    ``PR_SET_PDEATHSIG`` makes the kernel send SIGKILL to the child when the thread that forked
    it ends: mse-run's main thread, which lives as long as mse-run. It is kept across the exec of
    the interpreter (simulation) and of ``gramine-direct``, a script that execs Gramine's loader
    in the same process (none of them is set-user-ID), and Gramine forks no helper process. If
    mse-run died before the call, the child already has another parent and kills itself.
    SIGKILL, not SIGTERM: nobody is left to insist if the app handles SIGTERM or takes long to
    stop, and a supervisor that died unannounced cannot vouch for its enclave any more. A
    simulated enclave so killed leaves its memory (``tls/``) behind: :func:`lock_workdir`
    removes it on the next run.

    A ``preexec_fn`` is unsafe when other threads may hold locks at the fork: mse-run starts
    the enclave before any thread of its own (the output relays start after), and this function
    takes no lock: one C call prepared beforehand, ``getppid`` and ``kill``.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:
        raise EnvironmentMissing(
            "mse-run needs Linux to start an enclave it supervises (prctl PR_SET_PDEATHSIG, "
            "which stops the enclave when mse-run dies)"
        ) from None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _supervised(argv: list[str], prepared: Prepared, **options: Any) -> subprocess.Popen[bytes]:
    """Start the enclave's process: it dies with mse-run and holds the work directory's lock."""
    try:
        return subprocess.Popen(
            argv,
            # Relative trusted-file URIs (the app, the sealed secrets) resolve from the work
            # directory.
            cwd=prepared.request.workdir,
            preexec_fn=_die_with_mse_run(),  # safe here: see _die_with_mse_run
            pass_fds=(prepared.claim.lock.fd,),
            **options,
        )
    except subprocess.SubprocessError as err:
        # Only the preexec function raises this one (its OSError does not cross the fork).
        raise Error(f"{argv[0]} could not be started: {err}") from None


def start_simulation(prepared: Prepared, sealing_key: bytes) -> subprocess.Popen[bytes]:
    # A certificate left by an enclave that was killed must not pass for the new one's.
    shutil.rmtree(prepared.request.workdir / SIMULATION_TLS_DIR, ignore_errors=True)
    env = simulation_environment(prepared, sealing_key)
    # The measured argv, unchanged: the same interpreter, flags and arguments as in the enclave.
    return _supervised(list(prepared.argv), prepared, env=env)


def start_direct(prepared: Prepared) -> subprocess.Popen[bytes]:
    """Start the signed manifest under ``gramine-direct``, its standard streams piped.

    The caller writes the launch line (simulation.direct) to stdin and relays the output:
    Gramine's console (the enclave's stdout and stderr) on stdout, Gramine's log on stderr.
    """
    return _supervised(
        ["gramine-direct", MANIFEST_NAME],
        prepared,
        env=enclave_environment(prepared),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
