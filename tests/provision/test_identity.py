"""Who a secret goes to: MRSIGNER alone is the host's own key, and a push names its deployment.

The audit's attack, replayed: ``mse-run`` signs where it runs (here with the throwaway key it
makes when none is mounted), so the host holds the signing key of the enclave it starts and an
MRSIGNER-only policy admits any code the host signs. Each test would release the secrets
without its check: the enclave it pushes to, or the client the server answers, is genuine, and
the refused policy or UUID is the only thing that stops the release.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.pipeline.conftest import BIN

from .conftest import SECRET, UUID, Enclave, read, serve_secrets
from .test_pull import _client_cert, _pull

OTHER_UUID = "00000000-0000-4000-8000-000000000000"


def _push(enclave: Enclave, *extra: str, uuid: str = UUID) -> subprocess.CompletedProcess[str]:
    """``mse-secrets push`` with only the options given (no ``--mrenclave`` unless given)."""
    return subprocess.run(
        [str(BIN / "mse-secrets"), "push", enclave.url, "--uuid", uuid,
         "--simulation-ca", str(enclave.ca), *extra],
        capture_output=True, text=True, env=enclave.env, timeout=120, check=False,
    )  # fmt: skip


def _mrsigner(enclave: Enclave) -> str:
    line = read(enclave.out).splitlines()[1]
    assert line.startswith("MRSIGNER: "), read(enclave.out)
    return line.split()[1]


def test_mrsigner_alone_is_refused_unless_the_signer_is_trusted(
    enclave: Enclave, secrets_file: Path
) -> None:
    pinned = ["--secrets", str(secrets_file), "--mrsigner", _mrsigner(enclave)]
    refused = _push(enclave, *pinned)
    assert refused.returncode == 2, refused.stderr
    assert "MRSIGNER without MRENCLAVE" in refused.stderr
    assert "--trust-signer-key-holder" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert enclave.requests_seen() == 0, enclave.log()

    # The documented opt-in: the owner says the key never reaches a host, and is warned.
    trusted = _push(enclave, *pinned, "--trust-signer-key-holder")
    assert trusted.returncode == 0, trusted.stderr
    assert f"of MRSIGNER {_mrsigner(enclave)}, whatever its code" in trusted.stderr
    enclave.wait_for("serving https://")


def test_a_push_to_another_deployment_sends_nothing(enclave: Enclave, secrets_file: Path) -> None:
    # The enclave verifies under the pinned MRENCLAVE; only the deployment it names differs.
    refused = _push(
        enclave, "--secrets", str(secrets_file), "--mrenclave", enclave.mrenclave, uuid=OTHER_UUID
    )
    assert refused.returncode == 1, refused.stderr
    assert f"for deployment '{UUID}'" in refused.stderr
    assert f"not --uuid {OTHER_UUID}; nothing was sent" in refused.stderr
    assert enclave.requests_seen() == 0, enclave.log()

    pushed = _push(enclave, "--secrets", str(secrets_file), "--mrenclave", enclave.mrenclave)
    assert pushed.returncode == 0, pushed.stderr


def test_serve_releases_on_mrsigner_only_when_the_signer_is_trusted(
    tmp_path: Path, env: dict[str, str], secrets_file: Path
) -> None:
    signer = "22" * 32  # the MRSIGNER of the client certificates _client_cert makes
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrsigner = "{signer}"\n')
    refused = subprocess.run(
        [str(BIN / "mse-secrets"), "serve", "--policy", str(policy), "--secrets",
         str(secrets_file), "--cert", "c.pem", "--key", "k.pem", "--port", "1"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "MRSIGNER without MRENCLAVE" in refused.stderr
    assert "trust_signer_key_holder = true" in refused.stderr

    server = serve_secrets(
        tmp_path,
        env,
        secrets_file,
        policy=f'mrsigner = "{signer}"\ntrust_signer_key_holder = true\n',
    )
    try:
        assert f"of MRSIGNER {signer}, whatever its code" in read(server.err)
        status, body = _pull(server, _client_cert(tmp_path, server.pki, mrenclave="33" * 32))
        assert status == 200, body
        assert json.loads(body)["secrets"]["API_KEY"] == SECRET
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
