"""The README and ``docs/`` say only what the product does.

* The README's "Try it without SGX" walkthrough is run as written: its ``sh`` blocks, in order,
  as one bash script, in a copy of this clone with a fresh home. It installs the clone into two
  new venvs (from PyPI), so it needs the network a fresh machine needs.
* Every other ``sh`` block of the README and ``docs/`` needs what this machine lacks (SGX, a
  Docker engine, a published image), and must say so in a ``<!-- not run here: REASON -->``
  line right above it. Each ``mse-*`` command in such a block is parsed by that command's own
  option parser, so an option the docs name and the command lacks fails here.

Synopses (options in brackets, ``...``) are ``text`` blocks: they are read, not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WALKTHROUGH = "## Try it without SGX"
NOT_RUN = re.compile(r"<!-- not run here: (?P<reason>[^>]*\S) -->")
# A block some other test runs as written: it names that test file, which must exist.
RUN_BY = re.compile(r"<!-- run as written by (?P<test>tests/\S+\.py)\b[^>]* -->")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    above: str  # the line right above the fence

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    start: int | None = None
    lang = ""
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, lang = number, fence.group("lang")
        else:
            above = lines[start - 2] if start >= 2 else ""
            found.append(Block(path, start, lang, "\n".join(lines[start : number - 1]), above))
            start = None
    assert start is None, f"{path}:{start}: a code block is never closed"
    return found


def _walkthrough_lines() -> range:
    text = (ROOT / "README.md").read_text().splitlines()
    begin = text.index(WALKTHROUGH) + 1
    end = next(i for i in range(begin, len(text)) if text[i].startswith("## "))
    return range(begin + 1, end + 1)


def walkthrough() -> list[Block]:
    inside = _walkthrough_lines()
    return [b for b in blocks(ROOT / "README.md") if b.line in inside]


def other_shell_blocks() -> list[Block]:
    inside = _walkthrough_lines()
    return [
        b
        for path in DOCUMENTS
        for b in blocks(path)
        if b.lang == "sh" and not (path.name == "README.md" and b.line in inside)
    ]


# --- every command block is run or parsed --------------------------------------------------


def test_the_walkthrough_is_shell_only_and_every_other_shell_block_says_why_it_is_not_run() -> None:
    steps = walkthrough()
    assert len(steps) >= 5, "the walkthrough lost its blocks"
    assert all(b.lang == "sh" for b in steps), [str(b) for b in steps if b.lang != "sh"]
    unmarked = [
        str(b)
        for b in other_shell_blocks()
        if not NOT_RUN.fullmatch(b.above.strip()) and not _run_elsewhere(b)
    ]
    assert not unmarked, (
        f"sh blocks neither in the walkthrough nor marked '<!-- not run here: REASON -->': "
        f"{unmarked}"
    )
    # A marker belongs to a command block: a stray one would excuse nothing.
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if NOT_RUN.fullmatch(line.strip()) or RUN_BY.fullmatch(line.strip()):
                assert number < len(lines) and lines[number] == "```sh", f"{path}:{number}"


def _run_elsewhere(block: Block) -> bool:
    found = RUN_BY.fullmatch(block.above.strip())
    return found is not None and (ROOT / found.group("test")).is_file()


def other_blocks_not_run() -> list[Block]:
    return [b for b in other_shell_blocks() if not _run_elsewhere(b)]


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from mse_base._cli import run, secrets, test, verify

    return {
        "mse-run": run._run_parser,
        "mse-verify": verify._verify_parser,
        "mse-secrets": secrets._parser,
        "mse-test": test._test_parser,
    }


# What a placeholder stands for, by the option before it: a value of the right shape, so the
# parser judges the option names and their arity, not our sample values.
_SAMPLES = {
    "--uuid": "533a2b83-4bc5-4a9c-955e-208c530bfd15",
    "--mrenclave": "00" * 32,
    "--mrsigner": "00" * 32,
    "--self-signed": "4102444800",
}
_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "(", ")"}


def commands(block: Block) -> Iterator[tuple[str, list[str]]]:
    """Each ``mse-*`` command line of ``block``: its name and its arguments, placeholders
    (``$VAR``, ``<...>``) replaced by sample values."""
    text = block.text.replace("\\\n", " ")
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for index, token in enumerate(tokens):
            name = os.path.basename(token)
            if name not in _parsers():
                continue
            # docker run --entrypoint mse-run IMAGE ARGS: the image is no argument of mse-run.
            first = index + 2 if index and tokens[index - 1] == "--entrypoint" else index + 1
            args: list[str] = []
            for arg in tokens[first:]:
                if arg in _OPERATORS:
                    break
                if arg.startswith("$") or arg.startswith("<"):
                    arg = _SAMPLES.get(args[-1] if args else "", "sample")
                args.append(arg)
            yield name, args


def test_every_command_that_is_not_run_parses_with_the_commands_own_options() -> None:
    parsers = _parsers()
    seen = 0
    failures = []
    for block in other_blocks_not_run():
        for name, args in commands(block):
            seen += 1
            parser = parsers[name]()
            parser.exit_on_error = False
            try:
                parser.parse_args(args)
            except SystemExit as done:
                if done.code:  # --version and --help exit 0
                    failures.append(f"{block}: {name} {shlex.join(args)}: refused")
            except argparse.ArgumentError as err:
                failures.append(f"{block}: {name} {shlex.join(args)}: {err}")
    assert not failures, "\n".join(failures)
    assert seen >= 8, f"only {seen} mse-* commands found outside the walkthrough"


def test_a_command_with_an_unknown_option_would_be_caught() -> None:
    """The check above can fail: a block naming an option mse-run lacks is refused."""
    block = Block(ROOT / "README.md", 1, "sh", "mse-run --size 8G \\\n  --no-such-option x", "")
    ((name, args),) = commands(block)
    parser = _parsers()[name]()
    parser.exit_on_error = False
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(args)


def test_mse_test_help_states_the_code_dir_default() -> None:
    from mse_base._cli import test

    assert "(default /mse-app" in test._test_parser().format_help()


# --- the quick start and the walkthrough, run as written -------------------------------------


def _copy_of_the_clone(target: Path) -> Path:
    """The clone's files as git knows them (committed or not, never ignored ones: no .venv)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if not source.is_file():
            continue  # listed, but deleted in the work tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return target


def _clean_environment(home: Path) -> dict[str, str]:
    """A new user's: a fresh home, no venv active, this machine's PATH and pip settings."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and not (venv and p.startswith(venv)) and not p.startswith(str(ROOT / ".venv"))
    ]
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env["PATH"] = os.pathsep.join(path)
    env["HOME"] = str(home)
    # Downloads already made by this user are reused; the commands themselves are unchanged.
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pip"
    if cache.is_dir():
        env.setdefault("PIP_CACHE_DIR", str(cache))
    return env


def test_the_quick_start_demo_runs_as_written(tmp_path: Path) -> None:
    """Quick start, command 1, from this clone (its .venv is the one these tests run from). The
    second command, ./dev/test.sh, is what runs this test."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    result = subprocess.run(
        ["./dev/demo.sh"],
        cwd=ROOT,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-4000:]
    assert "response: Hello world" in said
    assert "verified: the quote is genuine and matches the policy" in said


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        pytest.fail("the walkthrough needs curl and openssl (the README's quick start says so)")
    clone = _copy_of_the_clone(tmp_path / "clone")
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "walkthrough.sh"
    # -e: a failing step fails the test (a user would see the error and stop there too).
    script.write_text(
        "set -euo pipefail\n" + "\n".join(f"# {b}\n{b.text}" for b in walkthrough()) + "\n"
    )
    log = tmp_path / "walkthrough.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=clone,
            env=_clean_environment(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = proc.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            # Whatever it left running (an enclave waiting, a server) goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # What the shell printed, then the logs the walkthrough keeps in files.
    said = log.read_text(errors="replace") + "".join(
        f"\n== {path.name}\n" + path.read_text(errors="replace")
        for path in sorted(clone.glob("*.log"))
    )
    assert status == 0, f"the walkthrough stopped (status {status}):\n{said[-6000:]}"
    assert said.count("(simulated)") >= 2, said[-3000:]  # the dry run labels its measurement
    assert "Hello world" in said
    assert "verified: the quote is genuine and matches the policy" in said
    assert "provisioned: 1 secret(s)" in said
    assert "pushed after verification" in said
    # Served once after the pull, once more after the sealed restart with no server.
    assert said.count("pulled, then sealed") >= 2, said[-3000:]
    assert "restored from the sealed state" in said
    # It wrote only where it says: the clone's copy and the new home.
    assert not (ROOT / "trial").exists() and not (ROOT / "app.tar").exists()
