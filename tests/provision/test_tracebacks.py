"""Encrypted code never reaches the host's logs: tracebacks and warnings without source lines.

The enclave's stdout and stderr are the host's (mse-run relays them), and Python prints the
source line of every traceback frame and warning it shows. Each app here fails on lines that
hold a marker found nowhere but in its source: the marker must never be in mse-run's output,
while the file name, the line number and the exception still are (the apps and checks are in
``tracebacks.py``, shared with the ``--direct`` test). The control test runs the same app
unencrypted, where the code is on the host anyway and the lines stay (so the markers are shown
to be printable at all: without the fix every test here sees them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Enclave,
    encrypt_code,
    make_tar,
    read,
    start_enclave,
    stop_process,
)
from .tracebacks import (
    ASGI_APP,
    BROKEN,
    FLASK_APP,
    FLASK_FILES,
    check_flask_log,
    fail_flask_app,
    fetch,
    frame,
    markers,
)


def provisioned(files: dict[str, str], tmp: Path, env: dict[str, str], *extra: str) -> Enclave:
    """An enclave serving ``files`` encrypted, pushed its key."""
    key, sealed = encrypt_code(make_tar(tmp / "app.tar", files), tmp)
    enclave = start_enclave(sealed, tmp, env, *extra)
    try:
        pushed = enclave.push("--code-key", str(key))
        assert pushed.returncode == 0, pushed.stderr + enclave.log()
        enclave.wait_for("serving https://")
    except BaseException:
        stop_process(enclave.proc)
        raise
    return enclave


@pytest.fixture
def stopped() -> Iterator[list[Enclave]]:
    started: list[Enclave] = []
    yield started
    for enclave in started:
        stop_process(enclave.proc)


def test_encrypted_flask_app_logs_no_source_line(
    tmp_path: Path, env: dict[str, str], stopped: list[Enclave]
) -> None:
    enclave = provisioned(FLASK_FILES, tmp_path, env)
    stopped.append(enclave)
    fail_flask_app(enclave.port, enclave.workdir / "cert.pem")
    assert enclave.stop() == 0
    check_flask_log(enclave.log())


def test_encrypted_asgi_app_logs_no_source_line(
    tmp_path: Path, env: dict[str, str], stopped: list[Enclave]
) -> None:
    enclave = provisioned({"app.py": ASGI_APP}, tmp_path, env)
    stopped.append(enclave)
    cert = enclave.workdir / "cert.pem"
    assert fetch(enclave.port, cert, "/raise") == "500"  # the server's own log
    assert fetch(enclave.port, cert, "/thread") == "200"  # threading.excepthook
    assert fetch(enclave.port, cert, "/del") == "200"  # sys.unraisablehook
    assert fetch(enclave.port, cert, "/excepthook") == "200"
    assert enclave.stop() == 0
    log = enclave.log()

    for marker in markers(ASGI_APP):
        assert marker not in log, f"{marker}'s source line reached the host:\n{log}"
    assert frame("app.py", ASGI_APP, "SOURCE-ASGI") + ", in app" in log
    assert "ValueError: the ASGI app failed" in log
    assert frame("app.py", ASGI_APP, "SOURCE-THREAD") + ", in work" in log
    assert "RuntimeError: a thread failed" in log
    assert frame("app.py", ASGI_APP, "SOURCE-DEL") + ", in __del__" in log
    assert "RuntimeError: a destructor failed" in log
    assert frame("app.py", ASGI_APP, "SOURCE-HOOK") + ", in report" in log
    assert "KeyError: 'reported through sys.excepthook'" in log


def test_a_syntax_error_at_import_under_debug_shows_no_source_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """--debug prints the import's whole chain; the SyntaxError carries its line itself."""
    key, sealed = encrypt_code(make_tar(tmp_path / "app.tar", {"app.py": BROKEN}), tmp_path)
    enclave = start_enclave(sealed, tmp_path, env, "--debug")
    try:
        pushed = enclave.push("--code-key", str(key), "--allow-debug")
        assert pushed.returncode == 0, pushed.stderr
        assert enclave.exit_status() == 1
    finally:
        stop_process(enclave.proc)
    log = enclave.log()
    assert "SOURCE-SYNTAX" not in log, log
    assert "Traceback (most recent call last)" in log  # --debug did print the chain
    assert frame("app.py", BROKEN, "SOURCE-SYNTAX") in log
    assert "SyntaxError: '(' was never closed" in log


def test_plain_code_keeps_its_source_lines(
    tmp_path: Path, env: dict[str, str], stopped: list[Enclave]
) -> None:
    """Unencrypted code is on the host already: its tracebacks keep the lines, for debugging."""
    enclave = start_enclave(make_tar(tmp_path / "app.tar", FLASK_FILES), tmp_path, env)
    stopped.append(enclave)
    pushed = enclave.push()
    assert pushed.returncode == 0, pushed.stderr
    enclave.wait_for("serving https://")
    fail_flask_app(enclave.port, enclave.workdir / "cert.pem")
    assert enclave.stop() == 0
    log = read(enclave.err)
    for marker in markers(FLASK_APP + BROKEN):
        assert marker in log, f"{marker} missing:\n{log}"
    assert "encrypted code" not in log


# Run in a fresh interpreter: hide_source changes process-wide hooks for good.
PATHS_SCRIPT = r"""
import inspect, linecache, os, sys, traceback
from pathlib import Path

from mse_base._internal.runtime import tracebacks

base = Path(sys.argv[1])
# Read and cached before it is hidden: hiding drops what linecache holds.
(base / "early").mkdir()
(base / "early" / "cached.py").write_text("SOURCE-CACHED\n")
assert linecache.getline(str(base / "early" / "cached.py"), 1) == "SOURCE-CACHED\n"
tracebacks.hide_source(base / "early")

code = base / "app"
tracebacks.hide_source(code)  # before the code is there, as the bootstrap does
(code / "pkg").mkdir(parents=True)
(code / "pkg" / "__init__.py").write_text("")
(code / "pkg" / "mod.py").write_text("def boom():\n    raise ValueError('boom')  # SOURCE-MOD\n")
(code / "alias").symlink_to("pkg")  # a link inside the code
(base / "outside").symlink_to(code / "pkg")  # a path outside that leads into it
sys.path[:0] = [str(code), str(base / "outside")]
import alias.mod, mod, pkg.mod

print(linecache.getline(str(base / "early" / "cached.py"), 1))
for module in (pkg.mod, alias.mod, mod):
    try:
        module.boom()
    except ValueError:
        print(traceback.format_exc())
print(linecache.getline("pkg/mod.py", 2))  # relative: looked up on sys.path
print(linecache.getlines("/nowhere/mod.py", vars(pkg.mod)))  # the module's loader
try:
    inspect.getsource(pkg.mod.boom)
except OSError as err:
    print("getsource:", err)
for name in ("<config>", str(code / "pkg" / "conf.py")):
    try:
        compile("x = (  # SOURCE-COMPILED\n", name, "exec")
    except SyntaxError as err:
        print(traceback.format_exc(), repr(err))
# Not secret: the library's lines, and a syntax error in a real file outside the code.
assert linecache.getline(os.__file__, 1) == open(os.__file__).readline()
try:
    # With a file name, the parser quotes the file's line, not the compiled text's.
    compile("y = [\n", os.__file__, "exec")
except SyntaxError:
    print(traceback.format_exc())
"""


def test_no_path_leads_to_a_line_of_the_code(tmp_path: Path) -> None:
    """Links in and around the code, relative names, loaders, inspect, compiled text."""
    result = subprocess.run(
        [sys.executable, "-c", PATHS_SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SOURCE-" not in out, out
    for place in ("app/pkg/mod.py", "app/alias/mod.py", "outside/mod.py"):
        assert f'{place}", line 2, in boom\nValueError: boom' in out, out
    assert "[]" in out
    assert "getsource: could not get source code" in out
    assert 'File "<config>", line 1\nSyntaxError:' in out
    assert "'<config>', 1, 5, None, 1, 0)" in out  # the repr too
    assert "\n    " + Path(os.__file__).read_text().splitlines()[0].strip() + "\n" in out
