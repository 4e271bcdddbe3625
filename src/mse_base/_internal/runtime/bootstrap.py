"""The program that runs inside the enclave: make the TLS key, get it attested, serve the app.

Order matters: the app is imported first so a broken app fails before any key exists; the TLS
private key is generated here, inside the enclave, and written only where the server can load it
and nothing outside can read it: Gramine's tmpfs (enclave memory) in SGX, a private temporary
directory in the work directory, removed on exit, in simulation. It is new on every start, so it
is never persisted.

With ``--provision push`` or ``pull`` the app is imported only once it is provisioned
(``provisioning``): it may read its secrets when imported, and encrypted code exists in the clear
only then, and no source line of it is ever printed (``tracebacks``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mse_base._internal.dcap import ratls
from mse_base._internal.enclave import manifest as mf
from mse_base._internal.enclave.deployment import Deployment
from mse_base._internal.files import private_key_pem, read_limited, write_private
from mse_base._internal.runtime.application import (
    Application,
    forbid_subprocesses,
    load_application,
)
from mse_base._internal.runtime.attestation import (
    GRAMINE_ATTESTATION_DIR,
    GramineQuoteProvider,
    QuoteProvider,
)
from mse_base._internal.runtime.serve import TLSFiles, serve
from mse_base.errors import EnvironmentMissing, UsageError

log = logging.getLogger(__name__)

SIMULATION_ENV = "MSE_SIMULATION"
# The simulation state mse-run writes: a few hex fields and two paths (each at most PATH_MAX,
# 4096 bytes), so 64 KiB is far more than it can hold.
MAX_SIMULATION_STATE = 64 * 1024


@dataclass(frozen=True)
class Platform:
    provider: QuoteProvider
    code_dir: Path
    # Where the TLS key and certificate go, and whether to remove them when serving ends.
    tls_dir: Path
    remove_tls_dir: bool
    mode: str = "SGX"
    # Where the enclave seals its restart state; the key only in simulation, where no Gramine
    # encrypts the directory (runtime.sealed).
    sealed_dir: Path = Path(mf.ENCLAVE_SECRETS_DIR)
    sealing_key: bytes | None = None


def detect_platform(attestation_dir: Path = GRAMINE_ATTESTATION_DIR) -> Platform:
    """Gramine's /dev/attestation when inside SGX; the simulation only when mse-run asked for it."""
    if GramineQuoteProvider.available(attestation_dir):
        return Platform(
            GramineQuoteProvider(attestation_dir),
            Path(mf.ENCLAVE_CODE_DIR),
            Path(mf.ENCLAVE_TMPFS_DIR) / "mse-tls",
            remove_tls_dir=False,  # enclave memory: gone with the enclave
        )
    state_path = os.environ.get(SIMULATION_ENV)
    if not state_path and attestation_dir.is_dir():
        # Gramine without SGX (mse-run --direct): the same enclave, a simulated quote. Only when
        # Gramine itself says there is no SGX: a missing quote file alone must never make an SGX
        # enclave take its identity and sealing key from what the host writes on stdin.
        attestation_type = _attestation_type(attestation_dir)
        if attestation_type is not None:
            raise EnvironmentMissing(
                f"{attestation_dir} has no quote, yet Gramine runs on SGX (attestation type "
                f"{attestation_type!r}): refusing to serve without a quote; the manifest must "
                'set sgx.remote_attestation = "dcap" (mse-run writes it so)'
            )
        return _direct_platform(attestation_dir)
    if not state_path:
        raise EnvironmentMissing(
            "no /dev/attestation: mse-bootstrap runs inside Gramine; start it with mse-run "
            "(or mse-run --simulation without SGX)"
        )
    from mse_base._internal.simulation.pki import SimulationQuoteProvider

    try:
        state = json.loads(read_limited(state_path, MAX_SIMULATION_STATE).decode("utf-8"))
        provider = SimulationQuoteProvider(
            mrenclave=bytes.fromhex(state["mrenclave"]),
            mrsigner=bytes.fromhex(state["mrsigner"]),
            isv_prod_id=int(state["isv_prod_id"]),
            isv_svn=int(state["isv_svn"]),
            debug=bool(state["debug"]),
        )
        return Platform(
            provider,
            Path(state["code_dir"]),
            Path(state["tls_dir"]),
            remove_tls_dir=True,
            mode="SIMULATION",
            sealed_dir=Path(state["secrets_dir"]),
            sealing_key=bytes.fromhex(state["sealing_key"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{SIMULATION_ENV}={state_path}: unreadable simulation state ({exc})"
        ) from None


def _attestation_type(attestation_dir: Path) -> str | None:
    """Gramine's attestation type; None only when Gramine runs without SGX.

    Gramine adds ``attestation_type`` on every SGX host, "none" included, and nothing but
    ``keys/`` elsewhere (libos/src/fs/dev/attestation.c, ``init_sgx_attestation``, v1.9). So
    its absence, and only that, means Gramine without SGX; any other answer, an unreadable file
    too, is SGX (or unknown) and is refused by the caller.
    """
    # A plain read, not files.read_limited: Gramine's pseudo-files hold a short word ("dcap").
    try:
        with (attestation_dir / "attestation_type").open("rb") as handle:
            return handle.read(64).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"unreadable: {err.strerror or err}"


def _direct_platform(attestation_dir: Path = GRAMINE_ATTESTATION_DIR) -> Platform:
    """Inside ``gramine-direct``: what mse-run wrote on standard input (see simulation.direct)."""
    from mse_base._internal.simulation.direct import DirectLaunch
    from mse_base._internal.simulation.pki import SimulationQuoteProvider

    if sys.stdin is None or sys.stdin.isatty():
        raise EnvironmentMissing(
            "no /dev/attestation/quote: this is Gramine without SGX; start it with mse-run --direct"
        )
    try:
        launch = DirectLaunch.read(sys.stdin.buffer)
        provider = SimulationQuoteProvider(
            mrenclave=launch.mrenclave,
            mrsigner=launch.mrsigner,
            isv_prod_id=launch.isv_prod_id,
            isv_svn=launch.isv_svn,
            debug=launch.debug,
            quoting_enclave=launch.quoting_enclave,
        )
    except ValueError as err:
        raise UsageError(f"standard input: {err}; start it with mse-run --direct") from None
    # No CPU-derived sealing key without SGX: the encrypted mount takes mse-run's throwaway one.
    key_file = attestation_dir / "keys" / mf.SEALING_KEY_NAME
    try:
        key_file.write_bytes(launch.sealing_key)
    except OSError as err:
        raise EnvironmentMissing(
            f"cannot set the sealing key through {key_file}: {err.strerror or err}"
        ) from None
    return Platform(
        provider,
        Path(mf.ENCLAVE_CODE_DIR),
        Path(mf.ENCLAVE_TMPFS_DIR) / "mse-tls",
        remove_tls_dir=False,  # Gramine's tmpfs: gone with the enclave
        mode="DIRECT",
    )


def run(deployment: Deployment, platform: Platform | None = None) -> None:
    platform = platform or detect_platform()
    forbid_subprocesses()
    app: Application | None = None
    if deployment.provision is None:
        app = _load(deployment, platform.code_dir)

    key = ec.generate_private_key(ec.SECP256R1())
    quote = platform.provider.quote(ratls.report_data_for_key(key.public_key()))
    cert = ratls.build_certificate(
        key=key,
        host=deployment.host,
        deployment_id=deployment.deployment_id,
        not_after=deployment.expiry,
        quote=quote,
        subject=(
            None
            if deployment.subject is None
            else x509.Name.from_rfc4514_string(deployment.subject)
        ),
        sans=deployment.sans,
    )
    mode = platform.mode
    with _tls_dir(platform) as tls_dir:
        key_path = tls_dir / mf.TLS_KEY_NAME
        cert_path = tls_dir / mf.TLS_CERT_NAME
        write_private(key_path, private_key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tls = TLSFiles(cert_path, key_path)
        if app is None:
            provisioned = _provisioned_app(deployment, platform, tls_dir, tls)
            if provisioned is None:
                return  # stopped before provisioning
            app, tls = provisioned
            if deployment.certificate is not None:
                mode += ", --certificate"
        serve(
            app,
            bind=deployment.bind,
            port=deployment.port,
            tls=tls,
            access_log=deployment.debug,
            on_ready=lambda: log.info(
                "serving https://%s:%d/ (%s)", deployment.host, deployment.port, mode
            ),
        )


def _provisioned_app(
    deployment: Deployment, platform: Platform, memory_dir: Path, ratls: TLSFiles
) -> tuple[Application, TLSFiles] | None:
    """Provision (from the sealed state, else push or pull), then load the app from where its
    code now is; also the certificate to serve it with."""
    from mse_base._internal.runtime import provisioning, tracebacks
    from mse_base._internal.runtime.sealed import SealedState

    if deployment.encrypted_code:
        # Before the code is decrypted: no printer may ever have read a line of it.
        tracebacks.hide_source(memory_dir / provisioning.DECRYPTED_CODE_DIR)
    # The TLS directory is enclave memory: the secrets and decrypted code go there too.
    installer = provisioning.Installer(
        deployment,
        memory_dir,
        platform.code_dir,
        SealedState(platform.sealed_dir, platform.sealing_key),
    )
    if installer.sealed.exists():
        provisioned: provisioning.Provisioned | None = provisioning.restore(installer)
    else:
        provision = provisioning.pull if deployment.provision == "pull" else provisioning.receive
        provisioned = provision(installer, ratls)
    if provisioned is None:
        return None
    app = _load(deployment, provisioned.code_dir)
    if deployment.encrypted_code:
        app = tracebacks.guard_app(app)
    if deployment.provision == "push":
        app = provisioning.refuse_second_push(app)
    return app, provisioned.tls or ratls


def _load(deployment: Deployment, code_dir: Path) -> Application:
    app = load_application(deployment.application, code_dir)
    log.info("loaded %s (%s)", app.spec, app.interface.upper())
    return app


@contextlib.contextmanager
def _tls_dir(platform: Platform) -> Iterator[Path]:
    directory = platform.tls_dir
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # mkdir's mode does not apply to a directory that already existed
    try:
        yield directory
    finally:
        if platform.remove_tls_dir:
            shutil.rmtree(directory, ignore_errors=True)
