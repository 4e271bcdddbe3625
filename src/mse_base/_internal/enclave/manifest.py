"""The Gramine manifest, generated from a model (never from a text template).

Syntax follows Gramine 1.9's "Manifest syntax" documentation: ``loader.entrypoint`` is a table,
``sgx.max_threads`` replaces ``sgx.thread_num``, trusted files may carry their ``sha256`` (then
``gramine-sgx-sign`` keeps it rather than hashing again). We hash every trusted file ourselves so
the manifest we validate is the manifest that is measured, in SGX and in simulation alike.

What is trusted is kept small on purpose (Gramine's docs note that large manifests slow enclave
start): the interpreter, the shared libraries it and its extension modules load, the standard
library without its tests, GUI and installer packages, the virtual environment's site-packages, and
the application. Byte-code caches are left out: they embed source timestamps, and the enclave never
writes them (``-B``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from mse_base._internal.enclave.size import format_size
from mse_base.errors import EnvironmentMissing, Error

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
HOST_SECRETS_DIR = "secrets"

# Gramine ships its own patched glibc (the "runtime dir"), mounted at /lib; the system's copies of
# these libraries are therefore never loaded in the enclave and are not trusted from the host.
_GLIBC_RUNTIME_LIBS = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libdl.so.2",
        "libm.so.6",
        "libpthread.so.0",
        "libresolv.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libnss_dns.so.2",
        "libnss_files.so.2",
    }
)
# Standard-library packages an HTTP server never imports; leaving them out shrinks the manifest.
_STDLIB_EXCLUDED = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)
_LDD_BATCH = 256
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")

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
            toolkit=Path(__file__).resolve().parent.parent,
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


def _walk(root: Path, excluded: frozenset[str] = frozenset({"__pycache__"})) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in excluded)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith((".pyc", ".pyo")) or path.is_symlink() or not path.is_file():
                continue
            yield path


def _shared_library_closure(objects: Iterable[Path]) -> list[Path]:
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
        for line in result.stdout.splitlines():
            match = _LDD_LINE.match(line)
            if match and Path(match.group(1)).name not in _GLIBC_RUNTIME_LIBS:
                found.add(os.path.normpath(match.group(1)))
    return [Path(p) for p in sorted(found)]


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def collect_trusted_files(
    python: PythonLayout,
    workdir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> TrustedSet:
    """Hash everything the enclave may read. Host paths of the app are relative to ``workdir``."""
    system: list[Path] = [python.executable]
    system += _walk(python.stdlib, _STDLIB_EXCLUDED)
    if python.platstdlib != python.stdlib:
        system += _walk(python.platstdlib, _STDLIB_EXCLUDED)
    pyvenv_cfg = python.venv / "pyvenv.cfg"
    if pyvenv_cfg.is_file():
        system.append(pyvenv_cfg)
    for site in (*python.site_packages, *python.extra_dirs):
        system += _walk(site)
    system = sorted(set(system))
    extensions = [p for p in system if p.name.endswith(".so") or ".so." in p.name]
    libraries = _shared_library_closure([python.executable, *extensions])
    system = sorted(set(system) | set(libraries))

    code_root = workdir / HOST_CODE_DIR
    code = list(_walk(code_root, frozenset()))
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
    return trusted


def _mount(path: str, uri: str, **extra: str) -> dict[str, str]:
    return {"path": path, "uri": uri, **extra}


def build_manifest(
    spec: EnclaveSpec, python: PythonLayout, gramine: GramineLayout, trusted: TrustedSet
) -> dict[str, Any]:
    """The manifest as a TOML-ready mapping; the same inputs always give the same mapping."""
    python_dirs = sorted(
        {str(python.stdlib), str(python.platstdlib), str(python.venv)}
        | {str(python.executable.parent)}
        | {str(d) for d in python.extra_dirs}
    )
    mounts: list[dict[str, str]] = [_mount("/lib", f"file:{gramine.runtime_dir}")]
    mounts += [_mount(d, f"file:{d}") for d in trusted.library_dirs]
    # A Python directory inside another one (the stdlib inside the prefix, say) is already
    # visible through the outer mount.
    mounts += [_mount(d, f"file:{d}") for d in python_dirs if not _under_any(d, python_dirs)]
    mounts += [
        _mount(ENCLAVE_CODE_DIR, f"file:{HOST_CODE_DIR}"),
        # Sealed with the MRENCLAVE-bound key: only this exact enclave on this CPU can read it.
        _mount(
            ENCLAVE_SECRETS_DIR,
            f"file:{HOST_SECRETS_DIR}",
            type="encrypted",
            key_name="_sgx_mrenclave",
        ),
        {"type": "tmpfs", "path": ENCLAVE_TMPFS_DIR},
    ]
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
    return any(path != o and path.startswith(o.rstrip("/") + "/") for o in others)


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
