"""Encrypted code never reaches the host's logs: tracebacks keep where and what, not the source.

The enclave's stdout and stderr are the host's, and Python prints the source line of every
traceback frame and every warning it shows: one failing request in encrypted code would hand the
host the lines the encryption hides. :func:`hide_source` closes each way a source line gets out:

- ``linecache``, which every Python-level printer reads lines through (``traceback``, so
  logging's ``formatException``, Flask's and asyncio's error logs; ``warnings``; ``inspect``;
  ``pdb``), answers nothing for a file under the decrypted code directory, or named by a
  relative path (which it would look up on ``sys.path``, the app's directory first), or of a
  module that lives there (whose loader it would ask).
- A ``SyntaxError`` carries its line in ``text``, filled by the parser, not linecache:
  ``traceback.TracebackException`` drops it, and the exception's ``args`` with it (its repr),
  unless the file is a real one outside the code (a library's, not secret).
- The interpreter's own printers open the file themselves (C ``_Py_DisplaySourceLine``, no
  linecache): ``sys.excepthook``, ``threading.excepthook`` and ``sys.unraisablehook`` are replaced
  with ones that print through ``traceback``.
- granian prints an exception that escapes the app with the same C printer (PyO3's
  ``PyTraceback::format`` is ``PyTraceBack_Print``): :func:`guard_app` logs it first, through
  ``traceback``, and hands granian the exception without the app's frames.

What is left: file names, line numbers, function names and the exception (type and message; what
a message says is up to the code that raised it). Without the lines there are no ``^^^`` markers
either: Python derives them from the line. ``inspect.getsource`` on the app's own code raises
``OSError``, as for code without a source file.

Only for encrypted code: plain code is on the host already, so hiding its lines would protect
nothing and cost debugging. A C extension that prints a traceback itself (``PyTraceBack_Print``,
``PyErr_Display``) is out of reach, as is the app printing its own files.
"""

from __future__ import annotations

import linecache
import logging
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from mse_base._internal.runtime.application import Application

__all__ = ["guard_app", "hidden", "hide_source"]

log = logging.getLogger(__name__)

# Directories whose files no printer may show, each as given and resolved (symbolic links in the
# path to it, or in the code tar, must not make a file look outside).
_roots: list[str] = []


def hide_source(code_dir: Path) -> None:
    """From now on, in this process, print no line of any file under ``code_dir``.

    Call it before the code is there (before decryption): linecache must never have read it.
    """
    first = not _roots
    for root in {os.path.normpath(code_dir.absolute()), os.path.realpath(code_dir)}:
        if root not in _roots:
            _roots.append(root)
    for name in [name for name in linecache.cache if hidden(name)]:
        linecache.cache.pop(name, None)
    if first:
        _install()
        log.info("encrypted code: logs show file names and line numbers, not source lines")


def hidden(filename: object, module_globals: Mapping[str, Any] | None = None) -> bool:
    """Whether linecache must not give lines for ``filename`` (read by ``module_globals``' loader
    when the file cannot be opened)."""
    if module_globals is not None and _module_hidden(module_globals):
        return True
    if not isinstance(filename, str):
        return True
    if filename.startswith("<") and filename.endswith(">"):
        # No file: linecache holds only what someone put there ("<doctest ...>").
        return False
    return _secret_path(filename)


def _secret_path(filename: str) -> bool:
    # A relative name is searched for on sys.path, where the app's directory comes first.
    if not Path(filename).is_absolute():
        return True
    for candidate in {os.path.normpath(filename), os.path.realpath(filename)}:
        for root in _roots:
            if candidate == root or candidate.startswith(root + os.sep):
                return True
    return False


def _module_hidden(module_globals: Mapping[str, Any]) -> bool:
    try:
        spec = module_globals.get("__spec__")
        files = (module_globals.get("__file__"), getattr(spec, "origin", None))
    except Exception:  # a strange mapping: fail closed
        return True
    return any(isinstance(f, str) and _secret_path(f) for f in files)


def _install() -> None:
    getlines, updatecache, lazycache = (
        linecache.getlines,
        linecache.updatecache,
        linecache.lazycache,
    )

    # linecache's own functions call these by their module names, so getline goes through them.
    def guarded_getlines(filename: str, module_globals: Any = None) -> list[str]:
        return [] if hidden(filename, module_globals) else getlines(filename, module_globals)

    def guarded_updatecache(filename: str, module_globals: Any = None) -> list[str]:
        return [] if hidden(filename, module_globals) else updatecache(filename, module_globals)

    def guarded_lazycache(filename: str, module_globals: Any) -> bool:
        return False if hidden(filename, module_globals) else lazycache(filename, module_globals)

    linecache.getlines = guarded_getlines
    linecache.updatecache = guarded_updatecache
    linecache.lazycache = guarded_lazycache

    init = traceback.TracebackException.__init__

    # Every TracebackException is made here, the ones of a chain too, whoever imported the class.
    def scrubbing_init(
        self: traceback.TracebackException,
        exc_type: type[BaseException],
        exc_value: BaseException,
        exc_traceback: TracebackType | None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if isinstance(exc_value, SyntaxError):
            _scrub(exc_value)
        init(self, exc_type, exc_value, exc_traceback, *args, **kwargs)

    setattr(traceback.TracebackException, "__init__", scrubbing_init)  # noqa: B010 (a method)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook


def _scrub(error: SyntaxError) -> None:
    """Drop the line a SyntaxError quotes, unless it is from a real file outside the code."""
    filename = error.filename
    if (
        isinstance(filename, str)
        and not filename.startswith("<")
        and not _secret_path(filename)
        and Path(filename).is_file()
    ):
        return
    error.text = None
    if len(error.args) == 2 and isinstance(error.args[1], tuple) and len(error.args[1]) >= 4:
        details = error.args[1]
        error.args = (error.args[0], (*details[:3], None, *details[4:]))


def _print(
    exc_type: type[BaseException],
    exc_value: BaseException | None,
    exc_traceback: TracebackType | None,
    stream: Any,
) -> None:
    if exc_value is None:
        print(exc_type.__name__, file=stream)
    else:
        traceback.print_exception(exc_type, exc_value, exc_traceback, file=stream)
    stream.flush()


def _excepthook(
    exc_type: type[BaseException],
    exc_value: BaseException,
    exc_traceback: TracebackType | None,
) -> None:
    if sys.stderr is not None:
        _print(exc_type, exc_value, exc_traceback, sys.stderr)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    # What threading's own hook prints, through traceback.
    if args.exc_type is SystemExit or sys.stderr is None:
        return
    name = args.thread.name if args.thread is not None else threading.get_ident()
    print(f"Exception in thread {name}:", file=sys.stderr)
    _print(args.exc_type, args.exc_value, args.exc_traceback, sys.stderr)


def _unraisablehook(unraisable: Any) -> None:
    # What sys.__unraisablehook__ prints, through traceback.
    if sys.stderr is None:
        return
    message = unraisable.err_msg or "Exception ignored in"
    if unraisable.object is not None:
        try:
            message = f"{message}: {unraisable.object!r}"
        except Exception:  # a repr that fails must not hide the error
            message = f"{message}: <object repr() failed>"
    print(message, file=sys.stderr)
    _print(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback, sys.stderr)


def _reported(error: Exception) -> Exception:
    """Log an exception escaping the app, then strip its frames for the server to print."""
    log.error("the application raised an exception", exc_info=error)
    return error.with_traceback(None)


_Scope = MutableMapping[str, Any]


class _Body:
    """A WSGI response body whose failures, as granian iterates it, are reported here first."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body
        self._next = iter(body).__next__

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return self._next()
        except StopIteration:
            raise
        except Exception as error:
            raise _reported(error) from None

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def guard_app(app: Application) -> Application:
    """``app`` with every exception escaping it to granian logged here, granian given no frame
    of it (see the module docstring)."""
    inner: Any = app.target
    if app.interface == "wsgi":

        def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            try:
                result: Iterable[bytes] = inner(environ, start_response)
                # A list cannot fail while iterated, and granian sends it in one piece.
                return result if isinstance(result, list) else _Body(result)
            except Exception as error:
                raise _reported(error) from None

        return replace(app, target=wsgi)

    async def asgi(
        scope: _Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") == "lifespan":
            # granian reports a failing lifespan without a traceback, and many plain ASGI apps
            # fail it on purpose (they serve only "http").
            await inner(scope, receive, send)
            return
        try:
            await inner(scope, receive, send)
        except Exception as error:
            raise _reported(error) from None

    return replace(app, target=asgi)
