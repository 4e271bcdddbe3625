"""Time one full verification of a real quote with its collateral, three verifiers side by side.

    .venv/bin/python bench/verify_bench.py [--case phala_sgx_v3] [--rounds 300]

* ours: ``mse_base.verify.Verifier``, a fresh Verifier per call (every check runs every call;
  the cold and reused-Verifier figures are printed for information, see the footnote it prints);
* ``dcap-qvl`` (PyPI; Python bindings of Phala's Rust verifier), ``dcap_qvl.verify``;
* ``intel-sgx-ra`` 2.3.3 (PyPI; the original MSE verifier), ``attest.verify_quote`` with offline
  collateral. It pins ``cryptography<44``, so it runs in its own venv (``--isr-python``, default
  ``/tmp/venv-isr/bin/python``; create it with ``python3 -m venv /tmp/venv-isr &&
  /tmp/venv-isr/bin/pip install intel-sgx-ra==2.3.3``), in a subprocess, with its clock pinned by
  patching the ``datetime`` its ``attest`` module imported (as the shared README describes).

All three get the same files at the case's pinned ``verify_at`` time. Goals (not asserted):
ours at least 2x faster than intel-sgx-ra, and within 3x of dcap-qvl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SHARED = Path("/work/shared/sgx-quotes")

ISR_SCRIPT = r"""
import datetime as _dt, json, logging, sys, time
from pathlib import Path
from cryptography import x509
from intel_sgx_ra import attest

case, at, rounds = Path(sys.argv[1]), _dt.datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])
logging.disable(logging.CRITICAL)

class _Pinned(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return at if tz is None else at.astimezone(tz)

attest.datetime = _Pinned
quote = (case / "quote.bin").read_bytes()
chain = x509.load_pem_x509_certificates((case / "tcb_info_issuer_chain.pem").read_bytes())

def once():
    collaterals = (
        (case / "tcb_info.json").read_bytes(),
        (case / "qe_identity.json").read_bytes(),
        chain[0],
        x509.load_der_x509_crl((case / "root_ca_crl.der").read_bytes()),
        x509.load_der_x509_crl((case / "pck_crl.der").read_bytes()),
    )
    assert attest.verify_quote(quote, collaterals=collaterals) is True

for _ in range(10):
    once()
samples = []
for _ in range(rounds):
    start = time.perf_counter()
    once()
    samples.append(time.perf_counter() - start)
print(json.dumps(samples))
"""


def _measure(call: Callable[[], object], rounds: int) -> list[float]:
    for _ in range(10):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def _parse_caches() -> list[Callable[[], None]]:
    """``cache_clear`` of every memoised pure function in the verifier's modules."""
    import importlib
    import pkgutil

    import mse_base._internal
    import mse_base.verify

    clears = []
    for package in (mse_base._internal, mse_base.verify):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    clears.append(value.cache_clear)
    return clears


def _ours(
    case: Path, at: dt.datetime
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], object]]:
    from mse_base.verify import TCB_STATUSES, Collateral, Policy, Verifier

    quote = (case / "quote.bin").read_bytes()
    policy = Policy(allowed_tcb_statuses=frozenset(TCB_STATUSES))

    def fresh() -> object:
        verifier = Verifier(collateral=Collateral.from_directory(case), policy=policy)
        return verifier.verify_quote(quote, at=at)

    reused_verifier = Verifier(collateral=Collateral.from_directory(case), policy=policy)

    def reused() -> object:
        return reused_verifier.verify_quote(quote, at=at)

    clears = _parse_caches()

    def cold() -> object:
        for clear in clears:
            clear()
        return fresh()

    return fresh, reused, cold


def _dcap_qvl(case: Path, at: dt.datetime) -> Callable[[], object]:
    import dcap_qvl  # type: ignore[import-untyped]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    quote = (case / "quote.bin").read_bytes()
    pck_chain = x509.load_pem_x509_certificates(quote[quote.index(b"-----BEGIN") :])
    pck_crl_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pck_chain[1:])
    now_secs = int(at.timestamp())

    def signed(name: str, key: str) -> tuple[str, bytes]:
        raw = (case / name).read_bytes()
        cut = raw.rindex(b',"signature":"')
        return raw[len(b'{"' + key.encode() + b'":') : cut].decode(), bytes.fromhex(
            raw[cut + len(b',"signature":"') : raw.rindex(b'"')].decode()
        )

    def once() -> object:
        tcb_info, tcb_sig = signed("tcb_info.json", "tcbInfo")
        qe_identity, qe_sig = signed("qe_identity.json", "enclaveIdentity")
        chain = (case / "tcb_info_issuer_chain.pem").read_text()
        collateral = dcap_qvl.QuoteCollateralV3(
            pck_crl_chain.decode(),
            (case / "root_ca_crl.der").read_bytes(),
            (case / "pck_crl.der").read_bytes(),
            chain,
            tcb_info,
            tcb_sig,
            chain,
            qe_identity,
            qe_sig,
        )
        return dcap_qvl.verify(quote, collateral, now_secs)

    return once


def _intel_sgx_ra(python: str, case: Path, at: dt.datetime, rounds: int) -> list[float] | str:
    if not Path(python).exists():
        return f"skipped: {python} not found (see this script's docstring)"
    proc = subprocess.run(
        [python, "-c", ISR_SCRIPT, str(case), at.isoformat(), str(rounds)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        return "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    samples: list[float] = json.loads(proc.stdout)
    return samples


def _fmt(samples: list[float]) -> str:
    median = statistics.median(samples) * 1e3
    best = min(samples) * 1e3
    return f"median {median:8.3f} ms   best {best:8.3f} ms   ({len(samples)} calls)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="phala_sgx_v3")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--isr-python", default="/tmp/venv-isr/bin/python")
    args = parser.parse_args()

    case = SHARED / args.case
    cases = {c["case"]: c for c in json.loads((SHARED / "expected.json").read_text())}
    at = dt.datetime.fromisoformat(cases[args.case]["verify_at"].replace("Z", "+00:00"))
    print(f"case {args.case}, verification time {at.isoformat()}, {args.rounds} calls each\n")

    fresh, reused, cold = _ours(case, at)
    results: dict[str, list[float] | str] = {
        "ours (fresh Verifier per call)": _measure(fresh, args.rounds),
        "ours (cold: parse caches cleared too)": _measure(cold, args.rounds),
        "ours (Verifier reused)": _measure(reused, args.rounds),
    }
    try:
        results["dcap-qvl (Rust)"] = _measure(_dcap_qvl(case, at), args.rounds)
    except ImportError:
        results["dcap-qvl (Rust)"] = "skipped: dcap-qvl is not installed"
    results["intel-sgx-ra 2.3.3"] = _intel_sgx_ra(args.isr_python, case, at, args.rounds)

    width = max(map(len, results))
    for name, samples in results.items():
        shown = samples if isinstance(samples, str) else _fmt(samples)
        print(f"{name:<{width}}  {shown}")

    print()
    isr, rust = results["intel-sgx-ra 2.3.3"], results["dcap-qvl (Rust)"]
    for label in (
        "ours (fresh Verifier per call)",
        "ours (cold: parse caches cleared too)",
        "ours (Verifier reused)",
    ):
        ours_samples = results[label]
        assert not isinstance(ours_samples, str)
        print(f"{label}:")
        for stat_name, stat in (("median", statistics.median), ("best", min)):
            ours = stat(ours_samples)
            if not isinstance(isr, str):
                ratio = stat(isr) / ours
                verdict = "goal met" if ratio >= 2 else "goal NOT met"
                print(f"  {stat_name:6s} intel-sgx-ra / ours = {ratio:5.2f}x  (>= 2x: {verdict})")
            if not isinstance(rust, str):
                ratio = ours / stat(rust)
                verdict = "goal met" if ratio <= 3 else "goal NOT met"
                print(f"  {stat_name:6s} ours / dcap-qvl     = {ratio:5.2f}x  (<= 3x: {verdict})")
    print(
        "\nfresh: every check (all signatures, chains, CRLs, windows, TCB, policy) runs on every "
        "call;\n       the parsers of identical JSON/ASN.1 bytes are memoised process-wide."
        "\ncold:  the same, with those parse memos cleared before each call (first-call cost)."
        "\nreused: one Verifier keeps the collateral and PCK chain checks it already did for the "
        "same bytes,\n       as a long-lived client does; quote and QE report signatures still "
        "run every call."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
