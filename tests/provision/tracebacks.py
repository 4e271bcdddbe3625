"""Apps that fail on lines only their source holds, and the checks on what the host saw.

Shared by the simulation tests (tests/provision/test_tracebacks.py) and the ``--direct`` one
(tests/gramine/test_provision_direct.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# The markers are in comments or in text no exception message repeats: only a source line
# carries them.
FLASK_APP = """\
import warnings

from flask import Flask

warnings.warn("the app warns when imported")  # SOURCE-WARN-5d1e

flask_app = Flask(__name__)


@flask_app.route("/")
def hello():
    return "Hello"


@flask_app.route("/raise")
def fail():
    raise ValueError("the route failed")  # SOURCE-RAISE-8b2c


@flask_app.route("/import-broken")
def import_broken():
    import broken  # noqa: F401

    return "unreachable"


@flask_app.route("/stream")
def stream():
    def chunks():
        yield "the first chunk\\n"
        raise ValueError("the stream failed")  # SOURCE-STREAM-b6d0

    return flask_app.response_class(chunks())


# WSGI middleware in front of Flask: what it raises reaches the server, as Flask's own errors
# do with PROPAGATE_EXCEPTIONS.
def app(environ, start_response):
    if environ["PATH_INFO"] == "/wsgi-raise":
        raise ValueError("the WSGI app failed")  # SOURCE-WSGI-0c3e
    return flask_app(environ, start_response)
"""
# Imported lazily by /import-broken: the SyntaxError carries this line in its own ``text``.
BROKEN = "value = (1,  # SOURCE-SYNTAX-3f9a\n"

# Paths Flask does not own: the server's, a thread's, a destructor's, the interpreter's hook.
ASGI_APP = """\
import sys
import threading


class Noisy:
    def __del__(self):
        raise RuntimeError("a destructor failed")  # SOURCE-DEL-a41b


def work():
    raise RuntimeError("a thread failed")  # SOURCE-THREAD-c7d2


def report():
    try:
        raise KeyError("reported through sys.excepthook")  # SOURCE-HOOK-62aa
    except KeyError:
        sys.excepthook(*sys.exc_info())  # as C code does with PyErr_Print


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/thread":
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    elif scope["path"] == "/del":
        Noisy()
    elif scope["path"] == "/excepthook":
        report()
    elif scope["path"] == "/raise":
        raise ValueError("the ASGI app failed")  # SOURCE-ASGI-e05f
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def line_of(source: str, marker: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if marker in line)


def markers(source: str) -> list[str]:
    return [word for word in source.split() if word.startswith("SOURCE-")]


def frame(name: str, source: str, marker: str) -> str:
    """How a traceback names the marker's line: 'name", line N'."""
    return f'{name}", line {line_of(source, marker)}'


def fetch(port: int, cacert: Path, path: str) -> str:
    """The status code curl saw, whatever became of the body (a failing stream breaks it)."""
    answer = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(cacert),
         f"https://localhost:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return answer.stdout


FLASK_FILES = {"app.py": FLASK_APP, "broken.py": BROKEN}


def fail_flask_app(port: int, cacert: Path) -> None:
    """Every failure FLASK_APP has, each answered as a failure."""
    assert fetch(port, cacert, "/raise") == "500"
    assert fetch(port, cacert, "/import-broken") == "500"
    assert fetch(port, cacert, "/wsgi-raise") == "500"
    assert fetch(port, cacert, "/stream") == "200"  # the failure comes after the headers
    assert fetch(port, cacert, "/") == "200"


def check_flask_log(log: str) -> None:
    """No line of FLASK_APP or BROKEN in ``log``, yet each failure named by file and line."""
    for marker in markers(FLASK_APP + BROKEN):
        assert marker not in log, f"{marker}'s source line reached the host:\n{log}"
    # What the operator still needs: where, and what.
    assert frame("app.py", FLASK_APP, "SOURCE-RAISE") + ", in fail" in log
    assert "ValueError: the route failed" in log
    assert f"app.py:{line_of(FLASK_APP, 'SOURCE-WARN')}: UserWarning: the app warns" in log
    assert frame("broken.py", BROKEN, "SOURCE-SYNTAX") in log
    assert "SyntaxError: '(' was never closed" in log
    assert frame("app.py", FLASK_APP, "SOURCE-WSGI") + ", in app" in log
    assert "ValueError: the WSGI app failed" in log
    assert frame("app.py", FLASK_APP, "SOURCE-STREAM") + ", in chunks" in log
    assert "ValueError: the stream failed" in log
    assert "encrypted code: logs show file names and line numbers, not source lines" in log
