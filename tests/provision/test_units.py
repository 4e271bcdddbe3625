"""The provisioning pieces on their own: wire format, endpoint state, code file, secrets API."""

from __future__ import annotations

import email.message
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import mse_base.secrets as app_secrets
from mse_base._internal.provision import codefile
from mse_base._internal.provision.protocol import (
    MAX_DEPTH,
    PATH,
    Payload,
    Refused,
    parse_payload,
)
from mse_base._internal.runtime import provisioning
from mse_base.errors import UsageError
from tests.certs import self_signed_pem
from tests.net import free_port
from tests.pipeline.conftest import BIN, make_deployment

UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"


# --- wire format ---------------------------------------------------------------------------


def test_payload_round_trip() -> None:
    payload = Payload(uuid=UUID, secrets={"A": [1, "two"]}, code_key=b"\x01" * 32)
    assert parse_payload(payload.encode()) == payload
    full = Payload(
        uuid=UUID,
        secrets={"A": 1},
        sealed_secrets={"B": {"x": 2}},
        tls_key="-----BEGIN PRIVATE KEY-----\nMC4CAQ==\n-----END PRIVATE KEY-----\n",
    )
    assert parse_payload(full.encode()) == full
    assert full.app_secrets() == {"A": 1, "B": {"x": 2}}
    # An empty object still asks for sealing: it is not the same as no field.
    assert parse_payload(Payload(uuid=UUID, sealed_secrets={}).encode()).sealed_secrets == {}
    assert parse_payload(Payload(uuid=UUID).encode()).sealed_secrets is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"secrets": {}}', "'uuid' is required"),
        (b'{"uuid": "u", "uuid": "u"}', "repeats a key"),
        (b'{"uuid": "u", "secrets": {"A": NaN}}', "NaN"),
        (b'{"uuid": "u", "secrets": []}', "'secrets' must be an object"),
        (b'{"uuid": "u", "secrets": {"": 1}}', "secret names"),
        (b'{"uuid": "u", "code_key": "abcd"}', "64 hex digits"),
        (b'{"uuid": "u", "tls_key": "abcd"}', "'tls_key' must be a PEM private key"),
        (b'{"uuid": "u", "sealed_secrets": []}', "'sealed_secrets' must be an object"),
        (
            b'{"uuid": "u", "secrets": {"A": 1}, "sealed_secrets": {"A": 2}}',
            "both name 'A'",
        ),
        (b'{"uuid": "u", "tls": "x"}', "unknown field(s) 'tls'"),
        # JSON that Python reads, but the enclave could not write back, encode or copy.
        (b'{"uuid": "u", "secrets": {"A": 1e400}}', "Infinity"),
        (b'{"uuid": "u", "sealed_secrets": {"A": [-1e400]}}', "Infinity"),
        (b'{"uuid": "u", "secrets": {"A": "\\ud800"}}', "lone surrogate"),
        (b'{"uuid": "u", "secrets": {"\\udfff": 1}}', "lone surrogate"),
        (b'{"uuid": "u", "secrets": {"A": %s1%s}}' % (b"[" * 900, b"]" * 900), "levels deep"),
        (b'{"uuid": "u", "secrets": {"A": %s1%s}}' % (b"[" * 5000, b"]" * 5000), "JSON"),
    ],
)
def test_bad_bodies_are_400_and_never_echoed(body: bytes, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_payload(body)
    assert refused.value.status == 400
    assert reason in str(refused.value)
    assert "abcd" not in str(refused.value)


def test_secrets_nest_up_to_the_documented_depth() -> None:
    def nested(levels: int) -> bytes:
        value = b'{"k": ' * levels + b"1" + b"}" * levels
        return b'{"uuid": "u", "secrets": {"A": %s}, "sealed_secrets": {"B": %s}}' % (value, value)

    # Round numbers that stay round: a finite double is kept, and big integers are not floats.
    kept = parse_payload(b'{"uuid": "u", "secrets": {"A": 1e300, "B": 12345678901234567890}}')
    assert kept.secrets == {"A": 1e300, "B": 12345678901234567890}
    assert parse_payload(nested(MAX_DEPTH)).secrets["A"]
    with pytest.raises(Refused, match=f"more than {MAX_DEPTH} levels deep"):
        parse_payload(nested(MAX_DEPTH + 1))


# --- endpoint state ------------------------------------------------------------------------


class _CountingInstaller:
    def __init__(self) -> None:
        self.calls = 0

    def install(self, payload: Payload) -> provisioning.Provisioned:
        self.calls += 1
        return provisioning.Provisioned(Path("code"), Path("secrets.json"), len(payload.secrets))


def _post(endpoint: provisioning._Endpoint, body: bytes) -> tuple[int, str, str]:
    headers = email.message.Message()
    headers["Content-Length"] = str(len(body))
    return endpoint.post(headers, io.BytesIO(body))


def test_the_endpoint_accepts_one_request() -> None:
    installer = _CountingInstaller()
    endpoint = provisioning._Endpoint(UUID, installer)  # type: ignore[arg-type]
    body = Payload(uuid=UUID, secrets={"A": "b"}).encode()
    assert _post(endpoint, body) == (200, "provisioned", "")
    assert _post(endpoint, body) == (409, "already provisioned", "")
    assert installer.calls == 1


def test_the_endpoint_wants_a_content_length() -> None:
    endpoint = provisioning._Endpoint(UUID, _CountingInstaller())  # type: ignore[arg-type]
    headers = email.message.Message()
    headers["Transfer-Encoding"] = "chunked"
    assert endpoint.post(headers, io.BytesIO(b""))[0] == 411


# --- encrypted code ------------------------------------------------------------------------


def test_code_file_round_trip_and_refusals(tmp_path: Path) -> None:
    key = codefile.new_key()
    sealed = codefile.encrypt(b"tar bytes", key)
    assert sealed.startswith(codefile.MAGIC + b"\x01")
    assert b"tar bytes" not in sealed
    assert codefile.decrypt(sealed, key, "f") == b"tar bytes"
    with pytest.raises(codefile.WrongKey, match="does not decrypt"):
        codefile.decrypt(sealed, codefile.new_key(), "f")
    # The header is authenticated: another nonce fails the tag like another key.
    tampered = bytearray(sealed)
    tampered[10] ^= 1
    with pytest.raises(codefile.WrongKey):
        codefile.decrypt(bytes(tampered), key, "f")
    future = bytearray(sealed)
    future[len(codefile.MAGIC)] = 2
    with pytest.raises(UsageError, match="version 2"):
        codefile.decrypt(bytes(future), key, "f")
    with pytest.raises(UsageError, match="not an mse encrypted code file"):
        codefile.decrypt(b"ustar" * 10, key, "f")


def test_key_file_is_private_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "code.key"
    key = codefile.new_key()
    codefile.write_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert codefile.read_key(path, "--code-key") == key
    path.write_text("zz" + key.hex()[2:])
    with pytest.raises(UsageError) as bad:
        codefile.read_key(path, "--code-key")
    assert key.hex()[2:] not in str(bad.value)


# --- the app's API -------------------------------------------------------------------------


def test_secrets_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(app_secrets.ENV, raising=False)
    with pytest.raises(app_secrets.SecretsUnavailable, match="MSE_SECRETS is not set"):
        app_secrets.get("A")
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"A": "x", "B": {"n": 1}}))
    monkeypatch.setenv(app_secrets.ENV, str(path))
    assert app_secrets.get("A") == "x"
    assert app_secrets.get("C", "default") == "default"
    with pytest.raises(KeyError, match="'C'"):
        app_secrets.get("C")
    everything = app_secrets.all()
    everything["B"]["n"] = 2  # a copy: the app cannot change what others read
    assert app_secrets.all() == {"A": "x", "B": {"n": 1}}


def test_secrets_api_never_shows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"A": "hunter2"')
    monkeypatch.setenv(app_secrets.ENV, str(path))
    with pytest.raises(app_secrets.SecretsUnavailable) as err:
        app_secrets.get("A")
    assert "hunter2" not in str(err.value)


# --- measured parameters -------------------------------------------------------------------


def test_no_provisioning_keeps_the_argv_and_so_the_measurement() -> None:
    assert not any("provision" in a or "encrypted" in a for a in make_deployment().bootstrap_args())
    deployment = make_deployment(provision="push", provision_timeout=30, encrypted_code=True)
    args = deployment.bootstrap_args()
    assert args[-5:] == ["--provision", "push", "--provision-timeout", "30", "--encrypted-code"]


def test_encrypted_code_needs_push() -> None:
    with pytest.raises(UsageError, match="add --provision push"):
        make_deployment(encrypted_code=True)


# --- mse-secrets usage errors (no network) -------------------------------------------------


def _secrets_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mse-secrets"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_push_needs_a_pinned_enclave() -> None:
    result = _secrets_cli("push", "https://localhost:1", "--uuid", UUID)
    assert result.returncode == 2
    assert "--mrenclave HEX is required" in result.stderr
    assert "Traceback" not in result.stderr
    lone = _secrets_cli("push", "https://localhost:1", "--uuid", UUID, "--trust-signer-key-holder")
    assert lone.returncode == 2
    assert "give --mrsigner HEX too" in lone.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"A": 1e400}', "Infinity"),
        (b'{"A": "\\ud800 hunter2"}', "lone surrogate"),
        (b'{"A": %s"hunter2"%s}' % (b"[" * 900, b"]" * 900), "levels deep"),
        (b'{"A": 1, "A": "hunter2"}', "repeats a key"),
    ],
)
@pytest.mark.parametrize("option", ["--secrets", "--sealed-secrets"])
def test_push_and_serve_refuse_secrets_the_enclave_would_refuse(
    tmp_path: Path, content: bytes, message: str, option: str
) -> None:
    bad = tmp_path / "secrets.json"
    bad.write_bytes(content)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{"00" * 32}"]\n')
    for command in (
        ["push", "https://localhost:1", "--uuid", UUID, "--mrenclave", "00" * 32],
        ["serve", "--policy", str(policy), "--cert", "c.pem", "--key", "k.pem", "--port", "1"],
    ):
        result = _secrets_cli(*command, option, str(bad))
        assert result.returncode == 2, result.stderr
        assert f"{option} {bad}: " in result.stderr and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "hunter2" not in result.stderr


def test_the_secrets_api_refuses_a_file_it_could_not_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"A": ' + "[" * 900 + '"hunter2"' + "]" * 900 + "}")
    monkeypatch.setenv(app_secrets.ENV, str(deep))
    with pytest.raises(app_secrets.SecretsUnavailable, match="levels deep") as refused:
        app_secrets.all()
    assert "hunter2" not in str(refused.value)


def test_push_refuses_a_bad_secrets_file_without_showing_it(tmp_path: Path) -> None:
    bad = tmp_path / "secrets.json"
    bad.write_text('{"API_KEY": "hunter2",}')
    result = _secrets_cli(
        "push", "https://localhost:1", "--uuid", UUID, "--mrenclave", "00" * 32,
        "--secrets", str(bad),
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--secrets {bad}: not UTF-8 JSON" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("through_link", [False, True])
def test_encrypt_code_refuses_one_file_for_key_and_ciphertext(
    tmp_path: Path, through_link: bool
) -> None:
    from tests.pipeline.conftest import make_tar

    tar = make_tar(tmp_path / "app.tar", {"app.py": "app = None\n"})
    (tmp_path / "keys").mkdir()
    (tmp_path / "link").symlink_to("keys")
    key = tmp_path / "keys" / "code.key"
    output = (tmp_path / "link" / "code.key") if through_link else key
    result = _secrets_cli("encrypt-code", str(tar), "--key-out", str(key), "-o", str(output))
    assert result.returncode == 2, result.stderr
    assert "are the same file" in result.stderr
    assert list((tmp_path / "keys").iterdir()) == []


def test_encrypt_code_never_replaces_files(tmp_path: Path) -> None:
    key = tmp_path / "code.key"
    key.write_text("keep me")
    tar = tmp_path / "app.tar"
    tar.write_bytes(b"")
    result = _secrets_cli(
        "encrypt-code", str(tar), "--key-out", str(key), "-o", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert "the file exists" in result.stderr
    assert key.read_text() == "keep me"
    assert not os.path.exists(tmp_path / "o")


def test_after_the_push_an_asgi_app_answers_409_on_the_provisioning_path() -> None:
    import asyncio

    from mse_base._internal.runtime.application import Application

    seen: list[str] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(str(scope["path"]))

    guarded = provisioning.refuse_second_push(Application("app:app", "asgi", inner))
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    target = guarded.target
    asyncio.run(target({"type": "http", "path": PATH}, receive, send))  # type: ignore[operator]
    asyncio.run(target({"type": "http", "path": "/"}, receive, send))  # type: ignore[operator]
    assert sent[0]["status"] == 409
    assert seen == ["/"]


def test_provision_options_are_checked() -> None:
    from mse_base._internal.enclave import deployment as dep

    assert dep.parse_provision(None) is None
    assert dep.parse_provision("pull") == "pull"
    with pytest.raises(UsageError, match="the provisioning modes are push, pull"):
        dep.parse_provision("sealed")
    assert dep.parse_provision_timeout(None, None) == dep.DEFAULT_PROVISION_TIMEOUT
    assert dep.parse_provision_timeout("5", "push") == 5
    with pytest.raises(UsageError, match="needs --provision push"):
        dep.parse_provision_timeout("5", None)
    for bad in ("0", "-1", "1.5", "forever"):
        with pytest.raises(UsageError, match="whole number of seconds"):
            dep.parse_provision_timeout(bad, "push")


def test_pull_options_are_checked(tmp_path: Path) -> None:
    from mse_base._internal.enclave import deployment as dep

    assert dep.parse_secrets_server("https://Owner.example:8443") == "https://owner.example:8443"
    assert dep.parse_secrets_server("https://10.0.0.1") == "https://10.0.0.1:443"
    for bad in ("http://owner:80", "https://owner:8443/path", "owner:8443", "https://:1"):
        with pytest.raises(UsageError, match="--secrets-server"):
            dep.parse_secrets_server(bad)
    with pytest.raises(UsageError, match="not PEM certificates"):
        dep.parse_secrets_server_ca(b"nope", "ca.pem")
    with pytest.raises(UsageError, match="needs --secrets-server"):
        make_deployment(provision="pull")
    with pytest.raises(UsageError, match="go with --provision pull"):
        make_deployment(provision="push", secrets_server="https://owner:1", secrets_server_ca="x")
    args = make_deployment(
        provision="pull", secrets_server="https://owner:1", secrets_server_ca="PEM"
    ).bootstrap_args()
    assert args[-4:] == ["--secrets-server", "https://owner:1", "--secrets-server-ca-pem", "PEM"]


def _serve_cli(tmp_path: Path, policy: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    return _secrets_cli(
        "serve", "--policy", str(path), "--cert", str(tmp_path / "c.pem"), "--key",
        str(tmp_path / "k.pem"), "--port", "1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("allow_debug = true\n", "mrenclave is required"),
        (f'mrsigner = "{"00" * 32}"\n', "MRSIGNER without MRENCLAVE"),
        ("trust_signer_key_holder = true\n", "give --mrsigner HEX too"),
        ("trust_signer_key_holder = 1\n", "trust_signer_key_holder must be a bool"),
        ('mrenclave = ["abcd"]\n', "--policy"),
        ('mrenclave = ["abcd"]\n', "--mrenclave 'abcd' must be 32 bytes"),
        ("mrenclaves = []\n", "unknown key(s) mrenclaves"),
        ('mrenclave = "%s"\nallow_status = "SWHardeningNeeded"\n' % ("00" * 32), "must be a list"),
        ("mrenclave = [", "not TOML"),
    ],
)
def test_serve_checks_its_policy_file(tmp_path: Path, policy: str, message: str) -> None:
    result = _serve_cli(tmp_path, policy)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_fixed_verification_time(tmp_path: Path) -> None:
    # Everything else would serve: a pinned policy, a real certificate and key, a free port.
    cert, key = self_signed_pem(tmp_path, "server")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrenclave = ["{"11" * 32}"]\n')
    proc = subprocess.Popen(
        [str(BIN / "mse-secrets"), "serve", "--policy", str(policy), "--cert", str(cert),
         "--key", str(key), "--bind", "127.0.0.1", "--port", str(free_port()),
         "--at", "2025-01-01T00:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"mse-secrets serve accepted --at and served:\n{err}") from None
    assert proc.returncode == 2, err
    assert "--at '2025-01-01T00:00:00Z': mse-secrets serve verifies each enclave" in err
    assert "remove --at" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--at" not in _secrets_cli("serve", "--help").stdout  # not offered, only refused


# --- hostile inputs (each under a deadline) ------------------------------------------------


def test_encrypted_code_detection_never_waits_on_a_pipe(tmp_path: Path) -> None:
    from tests.bounded import within

    fifo = tmp_path / "app.tar.enc"
    os.mkfifo(fifo)
    with within():
        assert not codefile.is_encrypted(fifo)
    sealed = tmp_path / "sealed"
    sealed.write_bytes(codefile.encrypt(b"tar", codefile.new_key()))
    assert codefile.is_encrypted(sealed)


def test_the_code_key_file_is_read_bounded(tmp_path: Path) -> None:
    from tests.bounded import within

    with within(), pytest.raises(UsageError, match="--code-key /dev/zero"):
        codefile.read_key(Path("/dev/zero"), "--code-key")


def test_secrets_from_standard_input_are_checked_like_a_file() -> None:
    result = subprocess.run(
        [str(BIN / "mse-secrets"), "push", "https://localhost:1", "--uuid", UUID,
         "--mrenclave", "00" * 32, "--secrets", "-"],
        input='{"API_KEY": "hunter2",}', capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--secrets -: not UTF-8 JSON" in result.stderr
    assert "hunter2" not in result.stderr


def test_an_endless_secrets_input_is_refused() -> None:
    result = subprocess.run(
        [str(BIN / "mse-secrets"), "push", "https://localhost:1", "--uuid", UUID,
         "--mrenclave", "00" * 32, "--secrets", "/dev/zero"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--secrets /dev/zero" in result.stderr


def _push_with(*extra: str) -> subprocess.CompletedProcess[str]:
    return _secrets_cli(
        "push", "https://localhost:1", "--uuid", UUID, "--mrenclave", "00" * 32, *extra
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "sealed.json",
            '["hunter2"]',
            "--sealed-secrets {path}: must be a JSON object of name: value",
        ),
        ("sealed.json", '{"A": "hunter2",}', "--sealed-secrets {path}: not UTF-8 JSON"),
        ("key.pem", "hunter2\n", "--tls-key {path}: not a PEM private key"),
    ],
)
def test_push_refuses_bad_sealed_secrets_and_tls_keys_without_showing_them(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    option = "--tls-key" if name == "key.pem" else "--sealed-secrets"
    result = _push_with(option, str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"mse-secrets: error: {message.format(path=path)}"
    assert "hunter2" not in result.stderr


def test_push_refuses_an_encrypted_tls_key_and_a_name_in_both_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    result = _push_with("--tls-key", str(key))
    assert result.returncode == 2 and "the key is encrypted; decrypt it first" in result.stderr
    plain, sealed = tmp_path / "plain.json", tmp_path / "sealed.json"
    plain.write_text('{"DB": "hunter2"}')
    sealed.write_text('{"DB": "hunter3"}')
    result = _push_with("--secrets", str(plain), "--sealed-secrets", str(sealed))
    assert result.returncode == 2
    assert "'secrets' and 'sealed_secrets' both name 'DB'; keep one" in result.stderr
    assert "hunter" not in result.stderr


def test_the_simulated_sealed_state_is_bound_to_its_key(tmp_path: Path) -> None:
    from mse_base._internal.runtime.sealed import SealedState, Unsealable

    payload = Payload(uuid="", sealed_secrets={"A": "hunter2"}, code_key=b"\x07" * 32)
    sealing = SealedState(tmp_path, b"\x01" * 16)
    sealing.write(sealing.seal(payload))
    path = tmp_path / "mse-provisioned.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"hunter2" not in path.read_bytes()
    restored = SealedState(tmp_path, b"\x01" * 16).load()
    assert restored.sealed_secrets == {"A": "hunter2"} and restored.code_key == b"\x07" * 32
    with pytest.raises(Unsealable, match="sealed under another key"):
        SealedState(tmp_path, b"\x02" * 16).load()


def test_the_stand_in_sealing_key_follows_mrenclave(tmp_path: Path) -> None:
    from mse_base._internal.simulation.sealing import stand_in_sealing_key

    root = tmp_path / "sealing-root.key"
    first = stand_in_sealing_key(root, b"\x01" * 32)
    assert stat.S_IMODE(root.stat().st_mode) == 0o600
    assert stand_in_sealing_key(root, b"\x01" * 32) == first  # a restart: the same key
    assert stand_in_sealing_key(root, b"\x02" * 32) != first  # another enclave: another key
    root.write_bytes(b"short")
    with pytest.raises(UsageError, match="is not a 32-byte key"):
        stand_in_sealing_key(root, b"\x01" * 32)


def test_a_certificate_needs_provisioning() -> None:
    with pytest.raises(UsageError, match="--certificate needs --provision push"):
        make_deployment(certificate="-----BEGIN CERTIFICATE-----\n")


def test_what_is_accepted_seals_within_what_a_restart_reads(tmp_path: Path) -> None:
    from mse_base._internal.provision.protocol import MAX_BODY
    from mse_base._internal.runtime.sealed import SealedState

    state = SealedState(tmp_path, b"\x01" * 16)
    # Raw UTF-8 emoji: 4 bytes each in the body, 12 if re-encoded with \u escapes.
    emoji = "\U0001f510" * ((MAX_BODY - 200) // 4)
    body = json.dumps({"uuid": UUID, "sealed_secrets": {"E": emoji}}, ensure_ascii=False)
    assert len(body.encode()) <= MAX_BODY
    state.write(state.seal(parse_payload(body.encode())))
    assert state.load().sealed_secrets == {"E": emoji}
    # Numbers that grow when read back ("1e5" is 100000.0): refused before anything is written.
    many = ",".join(["1e5"] * 250_000)
    numbers = json.dumps({"uuid": UUID, "sealed_secrets": {"N": []}}).replace("[]", f"[{many}]")
    assert len(numbers) <= MAX_BODY
    (tmp_path / "mse-provisioned.json").unlink()
    with pytest.raises(Refused) as refused:
        state.seal(parse_payload(numbers.encode()))
    assert refused.value.status == 413
    assert not (tmp_path / "mse-provisioned.json").exists()
