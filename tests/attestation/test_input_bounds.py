"""No input can hang ``mse-verify`` or fill its memory: each file it reads is capped while read.

The real command, as a subprocess in its own session, under a deadline: a hang fails the test
(and the whole session is killed) instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from mse_base._internal.dcap.collateral import MAX_DOCUMENT_SIZE
from mse_base._internal.dcap.quote import MAX_QUOTE_SIZE
from mse_base._internal.dcap.ratls import MAX_CERTIFICATE_SIZE
from mse_base._internal.files import PIPE_IDLE_SECONDS, InputRefused, read_limited
from tests.bounded import DEADLINE

from .conftest import SHARED

MSE_VERIFY = Path(sys.executable).with_name("mse-verify")
QUOTE = SHARED / "automata_sgx_v3" / "quote.bin"
CERT = SHARED / "gramine_ratls" / "cert.pem"
# Both verify with automata's collateral at this time once their TCB status is allowed.
VERIFIES: list[str | Path] = ["--collateral", SHARED / "automata_sgx_v3"]
VERIFIES += ["--at", "2025-09-01T00:00:00Z"]
VERIFIES += ["--allow-status", "SWHardeningNeeded", "--allow-status", "OutOfDate"]


def run(
    argv: list[str | Path],
    *,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    feed: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own session; kill the session if it outlives the deadline.

    ``feed``: stdin is a pipe the test writes zeros into without end, until the command stops
    reading.
    """
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.PIPE if feed else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    writer = None
    if feed:
        assert proc.stdin is not None
        writer = threading.Thread(target=_endless, args=(proc.stdin,), daemon=True)
        writer.start()
    try:
        out, err = proc.communicate(timeout=DEADLINE) if not feed else _wait(proc)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{argv[:3]} still running after {DEADLINE} s: the input made it hang")
    if writer is not None:
        writer.join(DEADLINE)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _wait(proc: subprocess.Popen[str]) -> tuple[str, str]:
    # communicate() would also write to stdin; the writer thread owns it.
    assert proc.stdout is not None and proc.stderr is not None
    proc.wait(timeout=DEADLINE)
    return proc.stdout.read(), proc.stderr.read()


def _endless(pipe: IO[str]) -> None:
    chunk = bytes(1 << 16)
    with contextlib.suppress(OSError, ValueError):  # the reader stopped: what should happen
        while True:
            pipe.buffer.write(chunk)  # type: ignore[attr-defined]
            pipe.flush()


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("mse-verify: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def verify_json(*args: str | Path, stdin: int | IO[bytes] | None = None) -> dict[str, Any]:
    proc = run([MSE_VERIFY, *args, *VERIFIES, "--json"], stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --- devices, terminals, endless streams -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--quote", "/dev/urandom"], "--quote /dev/urandom is a character device"),
        (["--cert", "/dev/zero"], "--cert /dev/zero is a character device"),
        (
            ["--quote", QUOTE, "--simulation-ca", "/dev/zero"],
            "--simulation-ca /dev/zero is a character device",
        ),
    ],
    ids=["quote-urandom", "cert-zero", "simulation-ca-zero"],
)
def test_a_device_is_refused_at_once(args: list[str | Path], needle: str) -> None:
    line = one_line_error(run([MSE_VERIFY, *args]))
    assert needle in line
    assert "a file, a pipe or - for standard input" in line or "ca.pem" in line


@pytest.mark.parametrize(
    ("option", "cap"), [("--quote", "64 KiB"), ("--cert", "256 KiB")], ids=["quote", "cert"]
)
def test_endless_standard_input_stops_at_the_cap(option: str, cap: str) -> None:
    line = one_line_error(run([MSE_VERIFY, option, "-"], feed=True))
    assert f"{option} - (standard input) is larger than {cap}" in line


def test_endless_process_substitution_stops_at_the_cap() -> None:
    # What a user types: the quote comes from a command, through a pipe /dev/fd/N.
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: process substitution needs it")
    proc = run(["bash", "-c", f"exec {MSE_VERIFY} --quote <(cat /dev/zero)"])
    line = one_line_error(proc)
    assert "is larger than 64 KiB" in line and "--quote /dev/fd/" in line


def test_a_terminal_on_standard_input_is_refused() -> None:
    # Reading it would wait for someone to type a quote.
    controller, terminal = pty.openpty()
    try:
        line = one_line_error(run([MSE_VERIFY, "--quote", "-"], stdin=terminal))
    finally:
        os.close(terminal)
        os.close(controller)
    assert "--quote - (standard input) is a terminal" in line


def test_a_named_pipe_nobody_opens_for_writing_ends_in_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "quote.fifo"
    os.mkfifo(fifo)
    # Nobody ever writes: mse-verify waits for a writer only so long.
    line = one_line_error(run([MSE_VERIFY, "--quote", fifo]))
    assert f"--quote {fifo} is a pipe nothing was written to for {PIPE_IDLE_SECONDS} s" in line


def test_a_named_pipe_held_open_by_a_silent_writer_ends_in_one_line(tmp_path: Path) -> None:
    # The review's case: `sleep 100 > quote.fifo` holds the pipe open and never writes; a
    # blocking read waited for ever.
    fifo = tmp_path / "quote.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'exec sleep 600 > "$0"', str(fifo)])
    try:
        line = one_line_error(run([MSE_VERIFY, "--quote", fifo]))
    finally:
        writer.kill()
        writer.wait()
    assert f"--quote {fifo} is a pipe nothing was written to for {PIPE_IDLE_SECONDS} s" in line


def test_an_idle_pipe_on_standard_input_ends_in_one_line() -> None:
    read_end, write_end = os.pipe()  # the test holds the write end open, writing nothing
    try:
        line = one_line_error(run([MSE_VERIFY, "--quote", "-"], stdin=read_end))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (
        f"--quote - (standard input) is a pipe nothing was written to for {PIPE_IDLE_SECONDS} s"
        in line
    )


def test_an_empty_pipe_is_a_usage_error() -> None:
    # A writer that closed without writing (a command that failed): no input, not a malformed
    # quote.
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        line = one_line_error(run([MSE_VERIFY, "--quote", "-"], stdin=read_end))
    finally:
        os.close(read_end)
    assert "--quote - (standard input) is empty" in line
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: process substitution needs it")
    line = one_line_error(run(["bash", "-c", f"exec {MSE_VERIFY} --cert <(true)"]))
    assert "--cert /dev/fd/" in line and "is empty" in line


def test_a_named_pipe_whose_writer_comes_later_is_read(tmp_path: Path) -> None:
    # mse-verify opens the pipe before anyone writes to it (`mse-verify --quote q & cmd > q`):
    # it waits for the writer instead of reading nothing.
    fifo = tmp_path / "quote.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [str(a) for a in [MSE_VERIFY, "--quote", fifo, *VERIFIES, "--json"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        writer = _open_for_writing_once_read(fifo, proc)
        os.set_blocking(writer, True)
        with os.fdopen(writer, "wb") as handle:
            handle.write(QUOTE.read_bytes())
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["verified"] is True


def _open_for_writing_once_read(fifo: Path, reader: subprocess.Popen[str]) -> int:
    """The write end of ``fifo``, opened as soon as ``reader`` has opened its read end."""
    deadline = time.monotonic() + DEADLINE
    while reader.poll() is None and time.monotonic() < deadline:
        try:
            # Non-blocking: fails (ENXIO) while no reader has the pipe open, instead of waiting.
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise
        time.sleep(0.01)
    pytest.fail(f"mse-verify never opened {fifo} (exit code {reader.poll()})")


def test_a_device_is_refused_without_being_opened() -> None:
    # Opening some devices acts (a tape rewinds, a watchdog arms): the kind is judged from stat.
    with _opens_recorded() as opened, pytest.raises(InputRefused, match="is a character device"):
        read_limited("/dev/zero", 16, pipes=True)
    assert "/dev/zero" not in opened


@contextlib.contextmanager
def _opens_recorded() -> Iterator[list[str]]:
    """The paths this process opens (os.open's audit event) while the block runs."""
    opened: list[str] = []
    _RECORDERS.append(opened)
    try:
        yield opened
    finally:
        _RECORDERS.remove(opened)


_RECORDERS: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _RECORDERS and isinstance(args[0], (str, bytes, os.PathLike)):
        for opened in _RECORDERS:
            opened.append(os.fsdecode(args[0]))


# An audit hook cannot be removed: it stays, recording only inside _opens_recorded.
sys.addaudithook(_audit)


def test_simulation_ca_is_never_standard_input() -> None:
    line = one_line_error(run([MSE_VERIFY, "--quote", QUOTE, "--simulation-ca", "-"]))
    assert "--simulation-ca -: standard input is not accepted here" in line


# --- the caps themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "cap", "text"),
    [("--quote", MAX_QUOTE_SIZE, "64 KiB"), ("--cert", MAX_CERTIFICATE_SIZE, "256 KiB")],
    ids=["quote", "cert"],
)
def test_a_file_one_byte_over_the_cap_is_refused(
    tmp_path: Path, option: str, cap: int, text: str
) -> None:
    at_cap = tmp_path / "at-cap"
    at_cap.write_bytes(b"\x03" * cap)
    over = tmp_path / "over"
    over.write_bytes(b"\x03" * (cap + 1))
    line = one_line_error(run([MSE_VERIFY, option, over]))
    assert f"{option} {over} is larger than {text}" in line
    # At the cap it is read, and rejected for what it is, not for its size.
    line = run([MSE_VERIFY, option, at_cap]).stderr
    assert "larger than" not in line and line.startswith("mse-verify: error: ")


# --- "-" gives what the file gives ---------------------------------------------------------


def test_quote_from_standard_input_verifies_like_the_file() -> None:
    from_file = verify_json("--quote", QUOTE)
    with QUOTE.open("rb") as stdin:  # a regular file on stdin: `mse-verify --quote - < quote.bin`
        from_stdin = verify_json("--quote", "-", stdin=stdin)
    assert from_stdin == from_file
    assert from_file["verified"] is True


def test_certificate_from_a_pipe_on_standard_input_verifies_like_the_file() -> None:
    from_file = verify_json("--cert", CERT)
    read_end, write_end = os.pipe()  # `cat cert.pem | mse-verify --cert -`
    with os.fdopen(write_end, "wb") as writer:
        writer.write(CERT.read_bytes())  # a few kB: fits the pipe buffer
    try:
        from_stdin = verify_json("--cert", "-", stdin=read_end)
    finally:
        os.close(read_end)
    assert from_stdin == from_file
    assert from_file["verified"] is True


# --- collateral files and --save-cert ------------------------------------------------------


@pytest.fixture
def collateral(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "collateral"
    shutil.copytree(SHARED / "automata_sgx_v3", directory)
    yield directory


def _fifo(path: Path) -> str:
    path.unlink()
    os.mkfifo(path)
    return "is a pipe, not a regular file"


def _device(path: Path) -> str:
    path.unlink()
    path.symlink_to("/dev/zero")
    return "is a character device, not a regular file"


def _huge(path: Path) -> str:
    with path.open("r+b") as handle:  # sparse: no disk is spent on it
        handle.truncate(MAX_DOCUMENT_SIZE + 1)
    return "is larger than 4 MiB"


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("tcb_info.json", _fifo),
        ("pck_crl.der", _device),
        ("qe_identity.json", _huge),
        ("tcb_info_issuer_chain.pem", _huge),
    ],
    ids=["tcb-info-fifo", "pck-crl-dev-zero", "qe-identity-huge", "issuer-chain-huge"],
)
def test_collateral_files_are_regular_and_capped(collateral: Path, name: str, damage: Any) -> None:
    reason = damage(collateral / name)
    line = one_line_error(
        run([MSE_VERIFY, "--quote", QUOTE, "--collateral", collateral, *VERIFIES[2:]])
    )
    assert f"collateral directory {collateral}: {name} {reason}" in line


def test_save_cert_onto_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    line = one_line_error(run([MSE_VERIFY, "--cert", CERT, *VERIFIES, "--save-cert", fifo]))
    assert f"--save-cert {fifo}: the file exists" in line
    assert fifo.is_fifo()
