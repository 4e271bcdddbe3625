"""``mse-run --direct`` against ``mse-run --simulation``: serving, start time, dry run, trusted set.

Both modes run the same app through the whole product (mse-run, the bootstrap, granian in one
process); ``--direct`` adds Gramine's LibOS (``gramine-direct``) around it, with the SGX manifest
and its trusted-file checks. Cells, side by side in one run:

* req/s and p99 over HTTPS (wrk, HTTP/1.1, 32 keep-alive connections, 2 client threads, a 2 s
  warm-up) for a Flask hello world and a plain ASGI hello world, under ``--direct`` and under
  ``--simulation``; goal: direct at least 0.6x simulation;
* enclave start time of the flagship example (examples/flask), from starting ``mse-run`` to the
  first HTTPS answer, under both modes; goal: at most 5 s under ``--direct``;
* ``mse-run --dry-run`` time (SGX mode: hashing, gramine-sgx-sign) and the trusted set's size.

Usage: ``python bench/direct_bench.py [--duration 10] [--rounds 1] [--json]`` from the
development venv (needs Gramine, ``apt-get install wrk``, curl). Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from serve_bench import ASGI_APP, FLASK_APP, free_port, run_wrk

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UUID = "533a2b83-4bc5-4a9c-955e-208c530bfd15"
MODES = ("direct", "simulation")


@dataclass
class Serving:
    app: str
    mode: str
    rps: float
    p99_ms: float
    errors: int


def pack(files: dict[str, str], path: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        for name in sorted(files):
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def mse_run(tar: Path, workdir: Path, port: int, *extra: str) -> list[str]:
    expiry = str((int(time.time()) // 86400 + 30) * 86400)
    return [
        str(BIN / "mse-run"),
        *("--size", "1G", "--code", str(tar), "--host", "localhost", "--application", "app:app"),
        *("--uuid", UUID, "--self-signed", expiry, "--port", str(port)),
        *("--workdir", str(workdir), "--force", *extra),
    ]


def start(
    tar: Path, workdir: Path, mode: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start mse-run; return it, its port and the seconds to its first HTTPS answer."""
    port = free_port()
    began = time.monotonic()
    proc = subprocess.Popen(
        mse_run(tar, workdir, port, f"--{mode}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"mse-run --{mode} exited with {proc.returncode}")
        answer = subprocess.run(
            ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            check=False,
        )
        if answer.stdout == "200":
            return proc, port, time.monotonic() - began
        if time.monotonic() - began > 180:
            proc.kill()
            raise SystemExit(f"mse-run --{mode} did not answer within 180 s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per serving cell")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, median reported")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("gramine-direct", "wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"direct_bench: {tool} not found", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="direct-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
        tars = {
            "flask": pack({"app.py": FLASK_APP}, tmp / "flask.tar"),
            "asgi": pack({"app.py": ASGI_APP}, tmp / "asgi.tar"),
        }
        example = ROOT / "examples" / "flask"
        flagship = pack(
            {f: (example / f).read_text() for f in ("app.py", "requirements.txt")},
            tmp / "flagship.tar",
        )

        dry_times = []
        summary: dict[str, object] = {}
        for number in range(3):
            began = time.monotonic()
            out = subprocess.run(
                [*mse_run(flagship, tmp / f"dry{number}", 8443), "--dry-run", "--json"],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            dry_times.append(time.monotonic() - began)
            summary = json.loads(out)
        manifest_bytes = (tmp / "dry0" / "mse.manifest").stat().st_size

        starts: dict[str, list[float]] = {mode: [] for mode in MODES}
        serving: dict[tuple[str, str], list[Serving]] = {}
        for _ in range(args.rounds):
            for mode in MODES:
                proc, _, seconds = start(flagship, tmp / f"start-{mode}", mode, env)
                starts[mode].append(seconds)
                stop(proc)
            for app, tar in tars.items():
                for mode in MODES:
                    proc, port, _ = start(tar, tmp / f"{app}-{mode}", mode, env)
                    try:
                        rps, p99, errors = run_wrk(f"https://127.0.0.1:{port}/", args)
                    finally:
                        stop(proc)
                    serving.setdefault((app, mode), []).append(Serving(app, mode, rps, p99, errors))

    cells = [sorted(rounds, key=lambda s: s.rps)[len(rounds) // 2] for rounds in serving.values()]
    start_median = {mode: statistics.median(values) for mode, values in starts.items()}
    ratios = {
        app: next(c.rps for c in cells if (c.app, c.mode) == (app, "direct"))
        / next(c.rps for c in cells if (c.app, c.mode) == (app, "simulation"))
        for app in tars
    }
    goals = {
        **{
            f"{app} req/s direct vs simulation >= 0.6": ratio >= 0.6
            for app, ratio in ratios.items()
        },
        "flagship start under --direct <= 5 s": start_median["direct"] <= 5.0,
    }
    errors = sum(c.errors for c in cells)
    if args.json:
        print(
            json.dumps(
                {
                    "serving": [asdict(c) for c in cells],
                    "ratios": ratios,
                    "start_s": start_median,
                    "dry_run_s": statistics.median(dry_times),
                    "trusted_files": summary["trusted_files"],
                    "trusted_bytes": summary["trusted_bytes"],
                    "manifest_bytes": manifest_bytes,
                    "goals": goals,
                }
            )
        )
    else:
        print(f"{'app':6} {'mode':11} {'req/s':>8} {'p99 ms':>8} {'errors':>6}")
        for c in cells:
            print(f"{c.app:6} {c.mode:11} {c.rps:8.0f} {c.p99_ms:8.2f} {c.errors:6d}")
        print()
        for app, ratio in ratios.items():
            print(f"{app} req/s direct vs simulation   {ratio:.2f}x")
        for mode in MODES:
            print(f"flagship start to first answer, --{mode}: {start_median[mode]:.2f} s")
        print(f"dry run (SGX mode, flagship): {statistics.median(dry_times):.2f} s")
        trusted_mb = int(str(summary["trusted_bytes"])) / 1e6
        print(
            f"trusted set: {summary['trusted_files']} files, {trusted_mb:.1f} MB, "
            f"manifest {manifest_bytes / 1e3:.0f} KB"
        )
        for goal, ok in goals.items():
            print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    return 0 if all(goals.values()) and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
