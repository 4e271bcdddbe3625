"""Time one full verification of a real quote with its collateral, three verifiers side by side.

    .venv/bin/python bench/verify_bench.py [--case phala_sgx_v3] [--rounds 300] [--blocks 6]

Verifiers (all get the same files, read once into memory, and the case's pinned ``verify_at``):

* ours: ``mse_base.verify.Verifier``, a new ``Verifier`` and a new ``Collateral`` per call, from
  fresh copies of the bytes (so no hash or object identity survives between calls);
* ``dcap-qvl`` (PyPI; Python bindings of Phala's Rust verifier), ``dcap_qvl.verify``;
* ``intel-sgx-ra`` 2.3.3 (PyPI; the original MSE verifier), ``attest.verify_quote`` with offline
  collateral (its CRL and certificate objects loaded from the bytes inside each call). It pins
  ``cryptography<44``, so it runs in its own venv (``--isr-python``, default
  ``/tmp/venv-isr/bin/python``, created on first use with ``python3 -m venv`` and
  ``pip install intel-sgx-ra==2.3.3``), in a long-lived subprocess, with its clock pinned by
  patching the ``datetime`` its ``attest`` module imported (see tests/data/sgx-quotes/README.md).

Two figures per verifier:

* cold: every process-wide memo of ours is cleared before each call (outside the timed region),
  so the call parses and checks everything: the first verification of new collateral and a new
  platform in a running process. The pinned Intel root certificate, loaded once per process
  when the first ``Verifier`` is made, is configuration rather than input and stays loaded.
* warm: the memos are kept; each call still builds a new ``Verifier``.

dcap-qvl and intel-sgx-ra keep no state between calls, so for them cold and warm are the same
measurement (printed in both columns).

What ours memoises, and why that is sound. Process-wide bounded LRU caches
(:func:`functools.lru_cache`) hold the outcome of checks that are pure functions of bytes:

* the PCK chain in the quote, given the trust root: the certificate parses, the two chain-link
  signatures, the CA / end-entity flags, the PCK CA kind and the decoded SGX extension;
* the five collateral documents signed under the trust root, given the root: the TCB signing
  chain, the TCB info and QE identity signatures, the root CA CRL signature and the JSON parses;
* the PCK CRL's DER and the PCK CA that must have signed it: the parsed CRL and its signature.

Each reads only its arguments (no clock, no policy, no I/O); certificates hash and compare by
their DER, so an equal key means equal input bytes; only successes are stored (a failing check
raises, and ``lru_cache`` does not remember exceptions, so it fails again next time); stored values
are immutable. Never memoised, run on every call: the quote signature and the QE report signature
and binding (unique per quote), every validity window (certificates, TCB info / QE identity
issueDate..nextUpdate, CRL thisUpdate..nextUpdate), revocation look-ups, FMSPC / PCE-ID and QE
identity matching, TCB status evaluation and the policy.

Goals (printed, not asserted): ours at least 2x faster than intel-sgx-ra, and within 3x of
dcap-qvl. Calls are measured in interleaved blocks (ours cold, ours warm, dcap-qvl,
intel-sgx-ra, repeated), so load from other processes spreads over all of them alike; medians
and bests are over all calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

SHARED = Path(
    os.environ.get(
        "MSE_SGX_QUOTES", Path(__file__).resolve().parents[1] / "tests" / "data" / "sgx-quotes"
    )
)
ISR_VERSION = "2.3.3"
FILES = (
    "quote.bin",
    "tcb_info.json",
    "qe_identity.json",
    "tcb_info_issuer_chain.pem",
    "pck_crl.der",
    "root_ca_crl.der",
)

# Runs in intel-sgx-ra's venv. Reads a count per line on stdin, answers with that many timings.
ISR_SCRIPT = r"""
import datetime as _dt, json, logging, sys, time
from pathlib import Path
from cryptography import x509
from intel_sgx_ra import attest

case, at = Path(sys.argv[1]), _dt.datetime.fromisoformat(sys.argv[2])
logging.disable(logging.CRITICAL)

class _Pinned(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return at if tz is None else at.astimezone(tz)

attest.datetime = _Pinned
files = {n: (case / n).read_bytes() for n in (
    "quote.bin", "tcb_info.json", "qe_identity.json", "tcb_info_issuer_chain.pem",
    "pck_crl.der", "root_ca_crl.der")}

def once():
    collaterals = (
        files["tcb_info.json"],
        files["qe_identity.json"],
        x509.load_pem_x509_certificates(files["tcb_info_issuer_chain.pem"])[0],
        x509.load_der_x509_crl(files["root_ca_crl.der"]),
        x509.load_der_x509_crl(files["pck_crl.der"]),
    )
    assert attest.verify_quote(files["quote.bin"], collaterals=collaterals) is True

for _ in range(10):
    once()
print("ready", flush=True)
for line in sys.stdin:
    samples = []
    for _ in range(int(line)):
        start = time.perf_counter()
        once()
        samples.append(time.perf_counter() - start)
    print(json.dumps(samples), flush=True)
"""

Samples = list[float]


def _measure(call: Callable[[], object], rounds: int, before: Callable[[], None]) -> Samples:
    samples = []
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def _nothing() -> None:
    pass


def _memo_clears() -> list[Callable[[], None]]:
    """``cache_clear`` of every process-wide memo in the verifier's modules, but the root's."""
    import importlib
    import pkgutil

    import mse_base._internal
    import mse_base.verify
    from mse_base._internal.dcap import chain

    clears = []
    for package in (mse_base._internal, mse_base.verify):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for value in vars(module).values():
                if value is chain.intel_sgx_root:
                    continue  # configuration, loaded once per process (see the docstring)
                if callable(getattr(value, "cache_clear", None)):
                    clears.append(value.cache_clear)
    return clears


def _ours(files: dict[str, bytes], at: dt.datetime) -> Callable[[], object]:
    from mse_base.verify import TCB_STATUSES, Collateral, Policy, Verifier

    policy = Policy(allowed_tcb_statuses=TCB_STATUSES - {"Revoked"})

    def copy(name: str) -> bytes:
        return bytes(bytearray(files[name]))

    def once() -> object:
        chain = copy("tcb_info_issuer_chain.pem")
        collateral = Collateral(
            tcb_info=copy("tcb_info.json"),
            qe_identity=copy("qe_identity.json"),
            tcb_info_issuer_chain=chain,
            qe_identity_issuer_chain=chain,
            pck_crl=copy("pck_crl.der"),
            root_ca_crl=copy("root_ca_crl.der"),
        )
        verifier = Verifier(collateral=collateral, policy=policy)
        return verifier.verify_quote(copy("quote.bin"), at=at)

    return once


def _floor(files: dict[str, bytes]) -> Callable[[], object]:
    """The library calls alone that a verifier on pyca/cryptography cannot avoid, with no logic.

    Load the five certificates (PCK chain from the quote, TCB signing chain), the two CRLs and the
    two JSON documents, and verify the nine ECDSA P-256 signatures (PCK CA and leaf, TCB signing
    cert, TCB info, QE identity, both CRLs, QE report, quote). Where each signed region lies is
    worked out once, outside the timed call. cryptography holds the GIL while it verifies, so the
    nine checks cannot overlap: this is a lower bound for any Python verifier built on it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from mse_base._internal.dcap.collateral import split_signed_json
    from mse_base._internal.dcap.quote import parse_quote

    quote = parse_quote(files["quote.bin"])
    ecdsa = ec.ECDSA(hashes.SHA256())

    def der(raw: bytes) -> bytes:
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )

    tcb_text, tcb_sig = split_signed_json(files["tcb_info.json"], "tcbInfo")
    qe_text, qe_sig = split_signed_json(files["qe_identity.json"], "enclaveIdentity")
    tcb_sig, qe_sig = der(tcb_sig), der(qe_sig)
    qe_report_sig, quote_sig = der(quote.qe_report_signature), der(quote.signature)
    point = b"\x04" + quote.attestation_key

    def once() -> object:
        leaf, pck_ca, root = x509.load_pem_x509_certificates(quote.pck_chain_pem)
        signer, _ = x509.load_pem_x509_certificates(files["tcb_info_issuer_chain.pem"])
        root_key, ca_key, leaf_key = root.public_key(), pck_ca.public_key(), leaf.public_key()
        signer_key = signer.public_key()
        assert isinstance(root_key, ec.EllipticCurvePublicKey)
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
        assert isinstance(signer_key, ec.EllipticCurvePublicKey)
        root_key.verify(pck_ca.signature, pck_ca.tbs_certificate_bytes, ecdsa)
        ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ecdsa)
        root_key.verify(signer.signature, signer.tbs_certificate_bytes, ecdsa)
        signer_key.verify(tcb_sig, tcb_text, ecdsa)
        signer_key.verify(qe_sig, qe_text, ecdsa)
        assert x509.load_der_x509_crl(files["pck_crl.der"]).is_signature_valid(ca_key)
        assert x509.load_der_x509_crl(files["root_ca_crl.der"]).is_signature_valid(root_key)
        leaf_key.verify(qe_report_sig, quote.qe_report.raw, ecdsa)
        attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        attestation_key.verify(quote_sig, quote.signed_bytes, ecdsa)
        return json.loads(tcb_text), json.loads(qe_text)

    return once


def _dcap_qvl(files: dict[str, bytes], at: dt.datetime) -> Callable[[], object]:
    import dcap_qvl  # type: ignore[import-untyped]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    quote = files["quote.bin"]
    pck_chain = x509.load_pem_x509_certificates(quote[quote.index(b"-----BEGIN") :])
    pck_crl_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pck_chain[1:])
    now_secs = int(at.timestamp())

    def signed(name: str, key: str) -> tuple[str, bytes]:
        raw = files[name]
        cut = raw.rindex(b',"signature":"')
        return raw[len(b'{"' + key.encode() + b'":') : cut].decode(), bytes.fromhex(
            raw[cut + len(b',"signature":"') : raw.rindex(b'"')].decode()
        )

    def once() -> object:
        tcb_info, tcb_sig = signed("tcb_info.json", "tcbInfo")
        qe_identity, qe_sig = signed("qe_identity.json", "enclaveIdentity")
        chain = files["tcb_info_issuer_chain.pem"].decode()
        collateral = dcap_qvl.QuoteCollateralV3(
            pck_crl_chain.decode(),
            files["root_ca_crl.der"],
            files["pck_crl.der"],
            chain,
            tcb_info,
            tcb_sig,
            chain,
            qe_identity,
            qe_sig,
        )
        return dcap_qvl.verify(quote, collateral, now_secs)

    return once


class _IntelSgxRa:
    """intel-sgx-ra in its own venv, as a subprocess that times blocks of calls on request."""

    def __init__(self, python: str, case: Path, at: dt.datetime) -> None:
        self._proc = subprocess.Popen(
            [python, "-c", ISR_SCRIPT, str(case), at.isoformat()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self._readline() != "ready":
            raise RuntimeError(self._error())

    def _readline(self) -> str:
        stdout: IO[str] | None = self._proc.stdout
        assert stdout is not None
        return stdout.readline().strip()

    def _error(self) -> str:
        self._proc.kill()
        _, stderr = self._proc.communicate()
        return (stderr.strip().splitlines() or ["no output"])[-1]

    def measure(self, rounds: int) -> Samples:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{rounds}\n")
        self._proc.stdin.flush()
        line = self._readline()
        if not line:
            raise RuntimeError(self._error())
        samples: Samples = json.loads(line)
        return samples

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=60)


def _isr_python(python: str) -> str:
    """intel-sgx-ra's interpreter; its venv is created the first time it is missing."""
    if Path(python).exists():
        return python
    venv = Path(python).parent.parent
    print(f"creating {venv} with intel-sgx-ra=={ISR_VERSION} (one time)...", flush=True)
    base = shutil.which("python3") or sys.executable
    for command in (
        [base, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "-q", f"intel-sgx-ra=={ISR_VERSION}"],
    ):
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            # A half-made venv would be taken for a ready one next time.
            shutil.rmtree(venv, ignore_errors=True)
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cannot create {venv}: {' '.join(command[1:4])}: {last}")
    return python


def _ms(samples: Samples | str) -> str:
    if isinstance(samples, str):
        return samples
    return f"{statistics.median(samples) * 1e3:7.3f} / {min(samples) * 1e3:7.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="phala_sgx_v3")
    parser.add_argument("--rounds", type=int, default=300, help="calls per verifier and mode")
    parser.add_argument("--blocks", type=int, default=6, help="interleaved blocks")
    parser.add_argument("--isr-python", default="/tmp/venv-isr/bin/python")
    args = parser.parse_args()

    case = SHARED / args.case
    cases = {c["case"]: c for c in json.loads((SHARED / "expected.json").read_text())}
    at = dt.datetime.fromisoformat(cases[args.case]["verify_at"].replace("Z", "+00:00"))
    files = {name: (case / name).read_bytes() for name in FILES}
    blocks = max(1, min(args.blocks, args.rounds))
    per_block = [args.rounds // blocks + (i < args.rounds % blocks) for i in range(blocks)]
    print(f"case {args.case}, verification time {at.isoformat()}, {args.rounds} calls each\n")

    ours = _ours(files, at)
    clears = _memo_clears()

    def clear_all() -> None:
        for clear in clears:
            clear()

    floor = _floor(files)
    runners: dict[str, Callable[[int], Samples]] = {
        "ours cold": lambda n: _measure(ours, n, clear_all),
        "ours warm": lambda n: _measure(ours, n, _nothing),
        "floor": lambda n: _measure(floor, n, _nothing),
    }
    results: dict[str, Samples | str] = {}
    try:
        dcap = _dcap_qvl(files, at)
        runners["dcap-qvl"] = lambda n: _measure(dcap, n, _nothing)
    except ImportError:
        results["dcap-qvl"] = "skipped: dcap-qvl is not installed"
    isr: _IntelSgxRa | None = None
    try:
        isr = _IntelSgxRa(_isr_python(args.isr_python), case, at)
        runners["intel-sgx-ra"] = isr.measure
    except (OSError, RuntimeError) as exc:
        results["intel-sgx-ra"] = f"failed: {exc}"

    for run in runners.values():  # warm-up, untimed
        run(10)
    for name in runners:
        results[name] = []
    for count in per_block:
        for name, run in runners.items():
            samples = results[name]
            assert not isinstance(samples, str)
            samples += run(count)
    if isr is not None:
        isr.close()

    rows = [
        ("ours (fresh Verifier per call)", results["ours cold"], results["ours warm"]),
        ("dcap-qvl (Rust)", results["dcap-qvl"], results["dcap-qvl"]),
        (f"intel-sgx-ra {ISR_VERSION}", results["intel-sgx-ra"], results["intel-sgx-ra"]),
        ("floor (library calls only)", results["floor"], results["floor"]),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'median / best per call':<{width}}  {'cold':>20}  {'warm':>20}")
    for label, cold, warm in rows:
        print(f"{label:<{width}}  {_ms(cold):>20}  {_ms(warm):>20}")

    print()
    isr_samples, rust = results["intel-sgx-ra"], results["dcap-qvl"]
    for mode in ("cold", "warm"):
        mine = results[f"ours {mode}"]
        assert not isinstance(mine, str)
        for stat_name, stat in (("median", statistics.median), ("best", min)):
            if not isinstance(isr_samples, str):
                ratio = stat(isr_samples) / stat(mine)
                verdict = "met" if ratio >= 2 else "NOT met"
                print(
                    f"{mode} {stat_name:6s} intel-sgx-ra / ours = {ratio:5.2f}x"
                    f"  (goal >= 2x: {verdict})"
                )
            if not isinstance(rust, str):
                ratio = stat(mine) / stat(rust)
                verdict = "met" if ratio <= 3 else "NOT met"
                print(
                    f"{mode} {stat_name:6s} ours / dcap-qvl     = {ratio:5.2f}x"
                    f"  (goal <= 3x: {verdict})"
                )
    floor_samples = results["floor"]
    assert not isinstance(floor_samples, str)
    if not isinstance(isr_samples, str):
        ratio = statistics.median(isr_samples) / statistics.median(floor_samples)
        print(
            f"floor median: intel-sgx-ra / floor = {ratio:5.2f}x  (no verifier on pyca/cryptography"
            " that makes the nine checks can be faster than the floor)"
        )
    print(
        "\ncold: ours with every process-wide memo cleared before each call (first sight of this"
        "\n      collateral and platform); warm: memos kept, a new Verifier per call. dcap-qvl and"
        "\n      intel-sgx-ra keep no state: one measurement, shown in both columns."
        "\nours, both modes: the quote and QE report signatures, every validity window, CRL"
        "\n      freshness, revocation, TCB status and policy run on every call (docstring)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
