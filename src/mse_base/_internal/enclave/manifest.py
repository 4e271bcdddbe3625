"""The Gramine manifest, generated from a model (never from a text template).

Syntax follows Gramine 1.9's "Manifest syntax" documentation: ``loader.entrypoint`` is a table,
``sgx.max_threads`` replaces ``sgx.thread_num``, trusted files may carry their ``sha256`` (then
``gramine-sgx-sign`` keeps it rather than hashing again). We hash every trusted file ourselves so
the manifest we validate is the manifest that is measured, in SGX and in simulation alike.

What is trusted is what Gramine loads and nothing it never loads (Gramine's docs note that large
manifests slow enclave start; under ``file_check_policy = "strict"`` anything left out cannot be
opened): the interpreter; the shared libraries it and its extension modules load, from Gramine's
runtime directory (its patched glibc) where it has one of that name, else from the host; the
standard library; the virtual environment's site-packages; the application. Left out: tests,
byte-code caches (they embed source timestamps, and the enclave never writes them: ``-B``), the
static libpython and its build directory, and the :data:`OPTIONAL_PARTS` a web app never imports
unless the user names them (``mse-run --include``).

Mounts: the tmpfs first and Gramine's glibc at ``/lib`` next, then the host directories at their
own paths, so nothing under ``/tmp`` or ``/lib`` is hidden; :func:`check_mounts` refuses any
order in which a later mount would cover an earlier one. Run for real under ``gramine-direct`` by
``tests/gramine``.

Names: Gramine 1.9 makes up ``/etc/resolv.conf`` from the host's
(``sys.enable_extra_runtime_domain_names_conf``) but no other file of ``/etc``, and glibc without
an nsswitch.conf asks DNS first and its files only when DNS is unreachable, so ``localhost`` did
not resolve. The work directory's ``etc/`` is the enclave's ``/etc``, with three fixed, trusted
files (:data:`NAME_FILES`): ``hosts`` naming localhost as Debian's does, ``nsswitch.conf``
(``hosts: files dns``; glibc 2.40, Gramine's, has both built in, so no NSS module is loaded) and
``host.conf`` (``multi on``, as Debian ships it: every address of a name, not only the first).
Every other name goes to the DNS servers of the host's resolv.conf. The host's own hosts file is
not passed in: Gramine's one way to do so, ``sgx.allowed_files``, makes every SGX enclave print
that its configuration "must not be used in production" (libos/src/utils/warn.c), and measuring
it would tie MRENCLAVE to the host (Docker writes the container's address into it). Not for
safety: whatever the host says about names is untrusted anyway, as its DNS answers and its
routing are, and the enclave trusts a peer only by a TLS certificate for the measured name.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from mse_base._internal.enclave.deployment import LISTEN_VARIABLES
from mse_base._internal.enclave.size import format_size
from mse_base._internal.files import InputRefused, open_regular, read_limited, write_atomic
from mse_base.errors import EnvironmentMissing, Error, UsageError

# Fixed paths inside the enclave; the host paths behind them live in the work directory and are
# given relative to it, so the work directory's location never reaches the measurement.
ENCLAVE_CODE_DIR = "/mse/app"
ENCLAVE_SECRETS_DIR = "/mse/secrets"
# In-enclave memory (the tmpfs mount below): for what must never reach the host, even encrypted.
ENCLAVE_TMPFS_DIR = "/tmp"  # noqa: S108 - Gramine's tmpfs, not the host's /tmp
# The RA-TLS files the bootstrap writes (in SGX to enclave memory, in simulation to the work
# directory), named here because the host reads the certificate back.
TLS_CERT_NAME = "cert.pem"
TLS_KEY_NAME = "tls-key.pem"
HOST_CODE_DIR = "code"
# The key of the sealed-secrets mount: derived from MRENCLAVE by the CPU (SGX only; under
# gramine-direct the bootstrap sets mse-run's stand-in through /dev/attestation/keys/).
SEALING_KEY_NAME = "_sgx_mrenclave"
HOST_SECRETS_DIR = "secrets"
# In that mount: what the enclave sealed for its restart (runtime.sealed); the app's own files
# may sit beside it.
SEALED_STATE_NAME = "mse-provisioned.json"
# Name resolution (see the module docstring): the work directory's etc/ is the enclave's /etc.
HOST_ETC_DIR = "etc"
#: The files of that /etc, trusted: hashed from these bytes, written at every run.
NAME_FILES = {
    "host.conf": b"multi on\n",
    "hosts": b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "nsswitch.conf": b"hosts: files dns\n",
}
_HOSTS_LIMIT = 16 << 20

# Gramine ships its own patched glibc (the "runtime dir"), mounted at /lib and first on
# LD_LIBRARY_PATH: a library of that name is loaded from there, never from the host, so it is
# the runtime's copy that is trusted (leaving it out stops Gramine at once: "libos_init() failed
# in init_elf_objects: Permission denied"). glibc dlopens libgcc_s for pthread_exit and
# unwinding; it is not in the runtime dir, so the host's copy is trusted.
_DLOPENED_BY_GLIBC = ("libgcc_s.so.1",)
# Always left out: tests, byte-code caches, the static libpython and its build configuration
# (``config-3.11-...``: 45 MB nothing loads at run time), other environments' packages.
_STDLIB_ALWAYS_EXCLUDED = frozenset({"test", "site-packages", "dist-packages", "__pycache__"})
_DYNLOAD_ALWAYS_EXCLUDED = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "_xxsubinterp")


@dataclass(frozen=True)
class OptionalPart:
    """A part of Python a web app never loads, left out of the trusted set unless named.

    Leaving out an extension module also leaves out the shared libraries only it pulls in (the
    closure is computed from what is trusted): X11 and Tcl/Tk for tkinter, ncurses for curses.
    """

    description: str
    stdlib: tuple[str, ...] = ()  # packages or modules of the standard library
    dynload: tuple[str, ...] = ()  # extension modules in lib-dynload, by module name
    venv: tuple[str, ...] = ()  # top-level entries of the venv's site-packages


#: What ``mse-run --include NAME`` can put back.
OPTIONAL_PARTS: dict[str, OptionalPart] = {
    "tkinter": OptionalPart("Tk GUI (X11, Tcl/Tk)", ("tkinter", "turtle.py"), ("_tkinter",)),
    "turtledemo": OptionalPart("turtle graphics demos", ("turtledemo",)),
    "idlelib": OptionalPart("the IDLE editor", ("idlelib",)),
    "curses": OptionalPart("terminal UI (ncurses)", ("curses",), ("_curses", "_curses_panel")),
    "readline": OptionalPart("interactive line editing (ncurses)", (), ("readline",)),
    "ensurepip": OptionalPart("pip's bootstrapper and bundled wheels", ("ensurepip",)),
    "lib2to3": OptionalPart("the Python 2 converter", ("lib2to3",)),
    # Modules PEP 594 deprecated (gone in Python 3.13) whose libraries weigh more than they do:
    # nis pulls in Kerberos and Sun RPC, _dbm Berkeley DB.
    "nis": OptionalPart("NIS lookups (Kerberos, Sun RPC)", (), ("nis",)),
    "crypt": OptionalPart("Unix crypt(3) hashes (libcrypt)", ("crypt.py",), ("_crypt",)),
    "spwd": OptionalPart("the shadow password database", (), ("spwd",)),
    "ossaudiodev": OptionalPart("OSS audio", (), ("ossaudiodev",)),
    "ndbm": OptionalPart("dbm.ndbm (Berkeley DB); dbm falls back to dbm.dumb", (), ("_dbm",)),
    "pydoc_data": OptionalPart("help() texts", ("pydoc_data",)),
    "pip": OptionalPart("the package installer", venv=("pip",)),
    "setuptools": OptionalPart(
        "packaging tools",
        venv=("setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth"),
    ),
    "wheel": OptionalPart("the wheel builder", venv=("wheel",)),
}


def check_included(names: Iterable[str]) -> frozenset[str]:
    """The ``--include`` names, each one a known optional part."""
    chosen = frozenset(names)
    unknown = sorted(chosen - set(OPTIONAL_PARTS))
    if unknown:
        raise UsageError(
            f"--include {unknown[0]}: not a part left out of the enclave; "
            f"choose from {', '.join(sorted(OPTIONAL_PARTS))}"
        )
    return chosen


_LDD_BATCH = 256
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
# "\tlibfoo.so.1 => not found": the loader found no such library (glibc's ldd prints this).
_LDD_NOT_FOUND = re.compile(r"^\s+(\S+)\s+=>\s+not found\s*$")

GRAMINE_LIBDIR_CANDIDATES = (
    Path("/usr/lib/x86_64-linux-gnu/gramine"),
    Path("/usr/local/lib/x86_64-linux-gnu/gramine"),
    Path("/usr/lib/gramine"),
)


class ManifestError(Error):
    """The generated manifest would not describe a working, measurable enclave."""


@dataclass(frozen=True)
class TrustedFile:
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class GramineLayout:
    """Where Gramine's own parts are; only their URIs enter the manifest."""

    libos: Path
    runtime_dir: Path
    version: str = "unknown"

    @classmethod
    def from_libdir(cls, libdir: Path, version: str = "unknown") -> GramineLayout:
        # Same derivation as Gramine's Jinja helpers (graminelibos/gen_jinja_env.py):
        # gramine.libos and gramine.runtimedir() both hang off the package library dir.
        return cls(libdir / "libsysdb.so", libdir / "runtime" / "glibc", version)

    @classmethod
    def detect(cls) -> GramineLayout | None:
        """Ask the installed Gramine (its Python package, as its own tools do) where it lives."""
        sign = shutil.which("gramine-sgx-sign")
        if sign is not None:
            with Path(sign).open("rb") as handle:
                first = handle.readline().decode(errors="replace").strip()
            interpreter = first[2:].split() if first.startswith("#!") else []
            if interpreter:
                probe = subprocess.run(
                    [
                        *interpreter,
                        "-c",
                        "import graminelibos as g; print(g.__version__); "
                        "print(g._CONFIG_PKGLIBDIR)",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                lines = probe.stdout.split()
                if probe.returncode == 0 and len(lines) == 2:
                    return cls.from_libdir(Path(lines[1]), lines[0])
        for libdir in GRAMINE_LIBDIR_CANDIDATES:
            if (libdir / "libsysdb.so").is_file():
                return cls.from_libdir(libdir)
        return None

    @classmethod
    def default(cls) -> GramineLayout:
        return cls.from_libdir(GRAMINE_LIBDIR_CANDIDATES[0])


@dataclass(frozen=True)
class PythonLayout:
    """The interpreter and environment that run inside the enclave: the ones running us."""

    executable: Path
    venv_python: Path
    venv: Path
    stdlib: Path
    platstdlib: Path
    site_packages: tuple[Path, ...]
    # Where this toolkit is imported from: inside site-packages in the image, elsewhere in an
    # editable (development) install; the bootstrap must be trusted either way.
    toolkit: Path

    @classmethod
    def current(cls) -> PythonLayout:
        if sys.prefix == sys.base_prefix:
            raise EnvironmentMissing(
                "mse-run must run from the virtual environment the enclave trusts "
                "(the image puts it on PATH); this Python has no virtual environment"
            )
        paths = sysconfig.get_paths()
        base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
        venv = Path(sys.prefix)
        site = sorted({Path(paths["purelib"]), Path(paths["platlib"])})
        return cls(
            executable=Path(os.path.realpath(sys.executable)),
            venv_python=venv / "bin" / "python3",
            venv=venv,
            stdlib=Path(base["stdlib"]),
            platstdlib=Path(base["platstdlib"]),
            site_packages=tuple(site),
            toolkit=Path(__file__).resolve().parents[2],
        )

    @property
    def extra_dirs(self) -> tuple[Path, ...]:
        inside = any(self.toolkit.is_relative_to(site) for site in self.site_packages)
        return () if inside else (self.toolkit,)


@dataclass(frozen=True)
class EnclaveSpec:
    enclave_size: int
    max_threads: int
    debug: bool
    isv_prod_id: int
    isv_svn: int
    argv: tuple[str, ...]


@dataclass
class TrustedSet:
    files: list[TrustedFile] = field(default_factory=list)
    library_dirs: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _walk(root: Path, skip: Callable[[Path], bool] = lambda _: False) -> Iterator[Path]:
    """Regular files under ``root`` in sorted order, without byte code or what ``skip`` names.

    ``skip`` sees paths relative to ``root``, for directories (then pruned) and files alike.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        relative = here.relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not skip(relative / d))
        for name in sorted(filenames):
            path = here / name
            # A link to a file is trusted at its own path with its target's bytes, which is what
            # the enclave reads there (Debian's stdlib links sitecustomize.py into /etc).
            if name.endswith((".pyc", ".pyo")) or not path.is_file():
                continue
            if not skip(relative / name):
                yield path


def _stdlib_skip(include: frozenset[str]) -> Callable[[Path], bool]:
    left_out = {
        entry
        for name, part in OPTIONAL_PARTS.items()
        if name not in include
        for entry in part.stdlib
    } | _STDLIB_ALWAYS_EXCLUDED
    dynload = tuple(
        entry
        for name, part in OPTIONAL_PARTS.items()
        if name not in include
        for entry in part.dynload
    )

    def skip(relative: Path) -> bool:
        parts = relative.parts
        if len(parts) == 1:
            return parts[0] in left_out or parts[0].startswith("config-")
        if parts[0] == "lib-dynload" and len(parts) == 2:
            module = parts[1].split(".", 1)[0]
            return module in dynload or module.startswith(_DYNLOAD_ALWAYS_EXCLUDED)
        return parts[-1].startswith("libpython") and parts[-1].endswith(".a")

    return skip


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _venv_skip(include: frozenset[str]) -> Callable[[Path], bool]:
    left_out = {
        _normalized(entry)
        for name, part in OPTIONAL_PARTS.items()
        if name not in include
        for entry in part.venv
    }

    def skip(relative: Path) -> bool:
        if len(relative.parts) != 1:
            return False
        name = relative.name
        if name.endswith((".dist-info", ".egg-info")):
            # name-version.dist-info: the distribution's metadata goes with it.
            name = name.rsplit(".", 1)[0].split("-", 1)[0]
        return _normalized(name) in left_out

    return skip


def _shared_library_closure(
    objects: Iterable[Path], runtime_dir: Path | None
) -> tuple[list[Path], list[Path]]:
    """The shared libraries ``objects`` load: (from the host, from Gramine's runtime dir)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise EnvironmentMissing("ldd is missing: install libc-bin to list the enclave's libraries")
    found: set[str] = set()
    paths = [str(obj) for obj in objects]
    # One ldd per batch, not per file: a venv holds hundreds of extension modules, and starting
    # ldd for each one was most of a dry run's time. ldd keeps going past a file it cannot read
    # (and then exits non-zero), so the exit status says nothing about the others.
    for start in range(0, len(paths), _LDD_BATCH):
        result = subprocess.run(  # ldd on files we are about to trust; no shell involved
            [ldd, *paths[start : start + _LDD_BATCH]],
            capture_output=True,
            text=True,
            check=False,
        )
        batch = paths[start : start + _LDD_BATCH]
        found.update(_ldd_libraries(result.stdout, batch))
    # Looked for where the loader will look: the directories of the libraries already found.
    directories = sorted({str(Path(lib).parent) for lib in found})
    for name in _DLOPENED_BY_GLIBC:
        candidates = [Path(d) / name for d in directories if (Path(d) / name).is_file()]
        if candidates:
            found.add(str(candidates[0]))
    host: set[Path] = set()
    runtime: set[Path] = set()
    for lib in map(Path, found):
        # The loader inside the enclave finds a runtime library first (/lib leads
        # LD_LIBRARY_PATH), whatever directory the host's ldd found it in.
        if runtime_dir is not None and (runtime_dir / lib.name).is_file():
            runtime.add(runtime_dir / lib.name)
        else:
            host.add(lib)
    return sorted(host), sorted(runtime)


def _ldd_libraries(output: str, objects: list[str]) -> set[str]:
    """The libraries in ``ldd`` output for ``objects``; MissingLibrary when one is not found.

    ldd heads each object's list with ``<path>:`` when given more than one. A library it
    cannot find would make the enclave fail at import, long after the dry run: refused here.
    """
    found: set[str] = set()
    current = objects[0] if len(objects) == 1 else "?"
    missing: dict[str, str] = {}
    for line in output.splitlines():
        if not line[:1].isspace() and line.endswith(":"):
            current = line[:-1]
            continue
        match = _LDD_LINE.match(line)
        if match:
            found.add(os.path.normpath(match.group(1)))
            continue
        match = _LDD_NOT_FOUND.match(line)
        if match:
            missing.setdefault(match.group(1), current)
    if missing:
        library, needed_by = next(iter(missing.items()))
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EnvironmentMissing(
            f"{needed_by} needs the shared library {library}{more}, which is not installed "
            f"(ldd: not found), so the enclave could not load it: install the package that "
            f"provides {library} in the image (or on this host) and run mse-run again"
        )
    return found


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    # Regular files only: a named pipe or a link to a device put where a trusted file was would
    # otherwise make the hashing wait, or read, for ever.
    with open_regular(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def collect_trusted_files(
    python: PythonLayout,
    workdir: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    runtime_dir: Path | None = None,
    include: frozenset[str] = frozenset(),
) -> TrustedSet:
    """Hash everything the enclave may read. Host paths of the app are relative to ``workdir``.

    ``runtime_dir``: Gramine's glibc, whose libraries replace the host's; None only where no
    Gramine is installed (the simulation), which then trusts no glibc at all. ``include``: the
    names of :data:`OPTIONAL_PARTS` to trust after all.
    """
    stdlib_skip = _stdlib_skip(include)
    system: list[Path] = [python.executable]
    system += _walk(python.stdlib, stdlib_skip)
    if python.platstdlib != python.stdlib:
        system += _walk(python.platstdlib, stdlib_skip)
    pyvenv_cfg = python.venv / "pyvenv.cfg"
    if pyvenv_cfg.is_file():
        system.append(pyvenv_cfg)
    venv_skip = _venv_skip(include)
    for site in python.site_packages:
        system += _walk(site, venv_skip)
    for extra in python.extra_dirs:
        system += _walk(extra)
    system = sorted(set(system))
    extensions = [p for p in system if p.name.endswith(".so") or ".so." in p.name]
    libraries, runtime = _shared_library_closure([python.executable, *extensions], runtime_dir)
    system = sorted(set(system) | set(libraries) | set(runtime))

    code_root = workdir / HOST_CODE_DIR
    code = list(_walk(code_root))
    total = len(system) + len(code)
    trusted = TrustedSet(library_dirs=sorted({str(lib.parent) for lib in libraries}))
    done = 0
    for path in system:
        digest, size = _sha256(path)
        trusted.files.append(TrustedFile(f"file:{path}", digest, size))
        done += 1
        if progress:
            progress(done, total)
    for path in code:
        digest, size = _sha256(path)
        relative = path.relative_to(workdir).as_posix()
        trusted.files.append(TrustedFile(f"file:{relative}", digest, size))
        done += 1
        if progress:
            progress(done, total)
    for name, content in sorted(NAME_FILES.items()):
        digest = hashlib.sha256(content).hexdigest()
        trusted.files.append(TrustedFile(f"file:{HOST_ETC_DIR}/{name}", digest, len(content)))
    return trusted


def write_name_files(workdir: Path) -> None:
    """The enclave's ``/etc`` (:data:`NAME_FILES`) in ``workdir``, where its mount finds it."""
    etc = workdir / HOST_ETC_DIR
    etc.mkdir(exist_ok=True)
    for name, content in NAME_FILES.items():
        write_atomic(etc / name, content, 0o644)


def only_in_host_files(name: str, hosts: Path = Path("/etc/hosts")) -> bool:
    """Whether ``hosts`` (this host's hosts file) maps ``name``, and the enclave's does not.

    Inside Gramine such a name resolves only if DNS knows it too, which mse-run cannot tell.
    """
    try:
        text = read_limited(hosts, _HOSTS_LIMIT)
    except InputRefused:
        return False
    wanted = name.lower().rstrip(".")
    return wanted in _host_names(text) and wanted not in _host_names(NAME_FILES["hosts"])


def _host_names(text: bytes) -> set[str]:
    """The names a hosts file maps (each line: an address, then names; # starts a comment)."""
    return {
        name.lower().rstrip(".")
        for line in text.decode("utf-8", "replace").splitlines()
        for name in line.partition("#")[0].split()[1:]
    }


def changed_trusted_files(manifest_path: Path, workdir: Path) -> list[str]:
    """The trusted files whose bytes no longer match ``manifest_path`` (changed or gone).

    Gramine refuses such a file (under ``gramine-direct`` it says so only at log level
    "warning", which the manifest does not enable, and Python then reports the directory as
    unreadable or the module as missing); mse-run asks this after an enclave stopped early, to
    name the file instead.
    """
    manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    changed = []
    for entry in manifest["sgx"]["trusted_files"]:
        uri = entry["uri"].removeprefix("file:")
        path = Path(uri) if uri.startswith("/") else workdir / uri
        try:
            digest, _ = _sha256(path)
        except OSError:  # InputRefused too: gone, unreadable, or no longer a regular file
            digest = ""
        if digest != entry["sha256"]:
            changed.append(uri)
    return changed


def measured_digests(
    manifest: dict[str, Any], options: int, gramine: str | None
) -> tuple[str, str]:
    """What the manifest measures besides the options, as two SHA-256 digests: (code, rest).

    ``options``: how many trailing argv items are the deployment's options; they, the enclave
    size and the debug flag are compared one by one instead (sealing.Measurement). The code is
    the app's trusted files; the rest ("the environment") is every other trusted file (the
    interpreter, libraries, venv, mse-base), the mounts and settings, and ``gramine``'s version,
    whose loader is measured too.
    """
    rest = copy.deepcopy(manifest)
    argv = rest["loader"]["argv"]
    rest["loader"]["argv"] = argv[: len(argv) - options]
    sgx = rest["sgx"]
    del sgx["enclave_size"], sgx["debug"]
    prefix = f"file:{HOST_CODE_DIR}/"
    code = [tf for tf in sgx["trusted_files"] if tf["uri"].startswith(prefix)]
    sgx["trusted_files"] = [tf for tf in sgx["trusted_files"] if not tf["uri"].startswith(prefix)]
    return _json_digest(code), _json_digest({"manifest": rest, "gramine": gramine})


def _json_digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _mount(path: str, uri: str, **extra: str) -> dict[str, str]:
    return {"path": path, "uri": uri, **extra}


def build_manifest(
    spec: EnclaveSpec, python: PythonLayout, gramine: GramineLayout, trusted: TrustedSet
) -> dict[str, Any]:
    """The manifest as a TOML-ready mapping; the same inputs always give the same mapping."""
    # Host directories appear in the enclave at their own paths. One inside another (the stdlib
    # inside the interpreter's lib directory, say) is already visible through the outer mount.
    host_dirs = sorted(
        {str(python.stdlib), str(python.platstdlib), str(python.venv)}
        | {str(python.executable.parent)}
        | {str(d) for d in python.extra_dirs}
        | set(trusted.library_dirs)
    )
    # Mounts apply in order and a later one hides whatever an earlier one put beneath its path.
    # The tmpfs comes first, so an interpreter, venv or library under /tmp stays visible (mounted
    # on top of it); Gramine's glibc next, so host library directories under /lib stay visible.
    mounts: list[dict[str, str]] = [
        {"type": "tmpfs", "path": ENCLAVE_TMPFS_DIR},
        _mount("/lib", f"file:{gramine.runtime_dir}"),
    ]
    mounts += [_mount(d, f"file:{d}") for d in host_dirs if not _under_any(d, host_dirs)]
    mounts += [
        _mount(ENCLAVE_CODE_DIR, f"file:{HOST_CODE_DIR}"),
        # Sealed with the MRENCLAVE-bound key: only this exact enclave on this CPU can read it.
        _mount(
            ENCLAVE_SECRETS_DIR,
            f"file:{HOST_SECRETS_DIR}",
            type="encrypted",
            key_name=SEALING_KEY_NAME,
        ),
        _mount("/etc", f"file:{HOST_ETC_DIR}"),
    ]
    check_mounts(mounts)
    library_path = ":".join(["/lib", *trusted.library_dirs])
    return {
        "loader": {
            "entrypoint": {"uri": f"file:{gramine.libos}"},
            "log_level": "error",
            "argv": list(spec.argv),
            "env": {
                "LD_LIBRARY_PATH": library_path,
                "PATH": f"{python.venv}/bin",
                "LANG": "C.UTF-8",
                # The port and bind address, from the host and unmeasured (see deployment): one
                # MRENCLAVE per release, whatever it listens on. Gramine passes these two and no
                # other variable through (not loader.insecure__use_host_env, which passes all).
                **{name: {"passthrough": True} for name in LISTEN_VARIABLES},
            },
        },
        "libos": {"entrypoint": str(python.executable)},
        "fs": {"mounts": mounts},
        "sys": {
            "disallow_subprocesses": True,
            # The bootstrap's SIGTERM handler only stops serving, so an untimely host signal can
            # end the service but not corrupt state.
            "enable_sigterm_injection": True,
            "enable_extra_runtime_domain_names_conf": True,
        },
        "sgx": {
            "enclave_size": format_size(spec.enclave_size),
            "max_threads": spec.max_threads,
            "debug": spec.debug,
            "edmm_enable": False,
            "remote_attestation": "dcap",
            "isvprodid": spec.isv_prod_id,
            "isvsvn": spec.isv_svn,
            "file_check_policy": "strict",
            "trusted_files": [{"uri": f.uri, "sha256": f.sha256} for f in trusted.files],
        },
    }


def _under_any(path: str, others: Iterable[str]) -> bool:
    return any(path != o and _within(path, o) for o in others)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_mounts(mounts: list[dict[str, str]]) -> None:
    """Refuse a mount that hides an earlier one: its files would vanish inside the enclave.

    Gramine applies mounts in order; one at a directory that contains an earlier mount's path
    covers it (a host library directory at /lib would hide Gramine's glibc, say).
    """
    for index, earlier in enumerate(mounts):
        for later in mounts[index + 1 :]:
            if _within(earlier["path"], later["path"]):
                what = earlier.get("uri", earlier.get("type", "tmpfs")).removeprefix("file:")
                raise ManifestError(
                    f"{what} is mounted at {earlier['path']} in the enclave, but "
                    f"{later.get('uri', 'tmpfs').removeprefix('file:')} is mounted over "
                    f"{later['path']} after it and would hide it: move the interpreter or "
                    "virtual environment out of that directory"
                )


def dumps(manifest: dict[str, Any]) -> str:
    return tomli_w.dumps(manifest)


_REQUIRED = {
    ("loader", "entrypoint", "uri"): str,
    ("loader", "argv"): list,
    ("libos", "entrypoint"): str,
    ("fs", "mounts"): list,
    ("sgx", "enclave_size"): str,
    ("sgx", "max_threads"): int,
    ("sgx", "debug"): bool,
    ("sgx", "remote_attestation"): str,
    ("sgx", "trusted_files"): list,
}
_ALLOWED_TOP = frozenset({"loader", "libos", "fs", "sys", "sgx"})


def validate(manifest: dict[str, Any], spec: EnclaveSpec) -> None:
    """Reject a manifest Gramine would sign anyway but that is not the enclave we mean.

    gramine-sgx-sign signs even an empty manifest with defaults, so a generator bug would give a
    valid-looking but wrong enclave; this is the guard.
    """
    unknown = set(manifest) - _ALLOWED_TOP
    if unknown:
        raise ManifestError(f"manifest has unexpected top-level keys: {sorted(unknown)}")
    for keys, kind in _REQUIRED.items():
        node: Any = manifest
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise ManifestError(f"manifest lacks {'.'.join(keys)}")
            node = node[key]
        if not isinstance(node, kind):
            raise ManifestError(f"manifest {'.'.join(keys)} must be a {kind.__name__}")
    sgx = manifest["sgx"]
    if sgx["enclave_size"] != format_size(spec.enclave_size):
        raise ManifestError("manifest enclave size differs from --size")
    if sgx["debug"] is not spec.debug:
        raise ManifestError("manifest sgx.debug differs from --debug")
    if sgx["remote_attestation"] != "dcap":
        raise ManifestError("manifest must enable DCAP attestation")
    if tuple(manifest["loader"]["argv"]) != spec.argv:
        raise ManifestError("manifest argv differs from the requested application arguments")
    uris = [tf["uri"] for tf in sgx["trusted_files"]]
    if len(uris) != len(set(uris)):
        raise ManifestError("manifest lists a trusted file twice")
    if not any(u.startswith(f"file:{HOST_CODE_DIR}/") for u in uris):
        raise ManifestError("manifest trusts no application file: the code directory is empty")
    for tf in sgx["trusted_files"]:
        if not re.fullmatch(r"[0-9a-f]{64}", tf.get("sha256", "")):
            raise ManifestError(f"trusted file {tf['uri']} has no valid sha256")
    if manifest["libos"]["entrypoint"] not in {u[len("file:") :] for u in uris}:
        raise ManifestError("the interpreter (libos.entrypoint) is not a trusted file")
    if manifest.get("sys", {}).get("disallow_subprocesses") is not True:
        raise ManifestError("manifest must forbid subprocesses")
    # Besides reading unmeasured host files, they make Gramine call every SGX enclave unfit for
    # production (see the module docstring).
    if "allowed_files" in sgx or sgx.get("file_check_policy") != "strict":
        raise ManifestError("manifest must not let the enclave read host files unmeasured")
    _validate_environment(manifest["loader"])


def _validate_environment(loader: dict[str, Any]) -> None:
    """The host may set the listening variables and nothing else of the enclave's environment."""
    for key in ("insecure__use_host_env", "env_src_file"):
        if key in loader:
            raise ManifestError(f"manifest must not set loader.{key}: the environment is measured")
    env = loader.get("env", {})
    passed = sorted(name for name, value in env.items() if isinstance(value, dict))
    if passed != sorted(LISTEN_VARIABLES) or any(
        env[name] != {"passthrough": True} for name in passed
    ):
        raise ManifestError(
            f"manifest passes {passed} through from the host: only {sorted(LISTEN_VARIABLES)} may"
        )
