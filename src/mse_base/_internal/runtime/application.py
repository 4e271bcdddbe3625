"""Load the user's web application and tell whether it speaks WSGI or ASGI.

The interface is read off the object itself, never taken from a flag, so that the same
``--application`` value works for Flask, FastAPI, Starlette, plain functions and classes alike.
Both ``mse-test`` and the in-enclave bootstrap load apps through :func:`load_application`, which is
what makes an app that works under ``mse-test`` work in the enclave too.

Detection, in order: an ``async def`` callable (function, or object whose ``__call__`` is one:
Starlette, FastAPI, Quart, Django's ASGIHandler) is ASGI 3; a class taking ``scope`` whose
instances are awaited with ``(receive, send)`` is ASGI 2 and gets adapted; a class taking
``(environ, start_response)`` is WSGI (PEP 3333 allows it); any other callable is told by its
required positional parameters: three is ASGI (a sync middleware returning the awaitable), two
is WSGI (Flask, Django's WSGIHandler), and ``*args`` is taken for WSGI.
"""

from __future__ import annotations

import _posixsubprocess
import functools
import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from mse_base._internal.enclave.deployment import APPLICATION_SPEC
from mse_base.errors import Error, UsageError

__all__ = [
    "Application",
    "ApplicationError",
    "SubprocessForbidden",
    "forbid_subprocesses",
    "load_application",
]

Interface = Literal["wsgi", "asgi"]


_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ApplicationError(Error):
    """The application could not be imported, or is neither a WSGI nor an ASGI app."""

    exit_code = 1


class SubprocessForbidden(PermissionError):
    """The app tried to start a process, which the enclave's manifest forbids.

    A PermissionError (an OSError), so code that already falls back when a program cannot be
    run still does.
    """


# The audit events (Python's "Audit events table") of every way to start a process.
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn"}
    | {"os.exec", "pty.spawn"}
)


def forbid_subprocesses() -> None:
    """Make any attempt to start a process fail with the reason, not Gramine's EAGAIN.

    Gramine answers fork with EAGAIN under ``sys.disallow_subprocesses`` (Python then reports
    "BlockingIOError: Resource temporarily unavailable"). An audit hook cannot be removed: call
    this only in the process that serves the enclave's app (the bootstrap), in every mode, so the
    simulation refuses what the enclave refuses.

    Two ways to start a process raise no audit event: ``_posixsubprocess.fork_exec``, which
    multiprocessing's spawn and forkserver start methods call directly, and foreign code
    (``ctypes``, a C extension) calling ``fork``/``execve`` itself. The first is replaced here by
    a stub that raises the same error. The second is out of scope: this is a diagnostic, not
    the barrier; inside the enclave Gramine's manifest (``sys.disallow_subprocesses``) refuses
    every fork whatever made it, and only the simulation, which is no enclave, lets one through.
    """

    def refuse(what: str) -> NoReturn:
        raise SubprocessForbidden(
            f"the enclave cannot start processes ({what}): its manifest sets "
            "Gramine's sys.disallow_subprocesses; do the work in-process, or outside the "
            "enclave"
        )

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in _PROCESS_EVENTS:
            refuse(f"{event} {args[0]!r}" if args else event)

    def fork_exec(*args: object, **kwargs: object) -> NoReturn:
        refuse(f"_posixsubprocess.fork_exec {args[0]!r}" if args else "_posixsubprocess.fork_exec")

    sys.addaudithook(hook)
    # Looked up on the module at each call (subprocess, multiprocessing.util), so this covers
    # modules imported before and after.
    setattr(_posixsubprocess, "fork_exec", fork_exec)  # noqa: B010 (a typed stub would not fit)


@dataclass(frozen=True)
class Application:
    """A loaded web application and the interface it was detected to speak."""

    spec: str
    interface: Interface
    target: object


def load_application(spec: str, code_dir: Path) -> Application:
    """Import ``module:attribute`` from ``code_dir`` and detect whether it is WSGI or ASGI.

    ``code_dir`` goes first on ``sys.path`` so that the app's own modules win over any installed
    package of the same name, as they do when the app is run from its own directory.
    """
    match = APPLICATION_SPEC.fullmatch(spec.strip())
    if match is None:
        raise UsageError(
            f"--application {spec!r} is not of the form module:attribute (for example app:app or "
            "pkg.web:create_app.instance)"
        )
    module_name, attr_path = match["module"], match["attr"]

    code_path = str(code_dir.resolve())
    if code_path in sys.path:
        sys.path.remove(code_path)
    sys.path.insert(0, code_path)

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ApplicationError(
            f"cannot import module {module_name!r} of --application {spec} from {code_dir}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        # An app that raises while being imported must stop the run with the reason, not a
        # traceback; the traceback is still chained for --debug.
        raise ApplicationError(
            f"importing module {module_name!r} of --application {spec} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc

    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ApplicationError(
                f"module {module_name!r} has no attribute {attr_path!r} (from --application {spec})"
            ) from None

    interface, served = _detect(target, spec)
    return Application(spec=spec, interface=interface, target=served)


def _detect(target: Any, spec: str) -> tuple[Interface, object]:
    """Return the interface and the callable to serve (an ASGI 2 class is adapted to ASGI 3)."""
    if not callable(target):
        raise ApplicationError(
            f"--application {spec} names a {type(target).__name__}, not a WSGI or ASGI application"
        )
    if inspect.isclass(target):
        return _detect_class(target, spec)
    call = target if _is_function_like(target) else type(target).__call__
    if _is_async(call) or _is_async(target):
        return "asgi", target
    arity = _positional_arity(target)
    # ASGI 3 takes (scope, receive, send) and WSGI takes (environ, start_response): for a plain
    # callable that returns an awaitable (some middlewares do), the arity is what tells them apart.
    if arity == 3:
        return "asgi", target
    if arity == 2 or arity is None:
        return "wsgi", target
    raise ApplicationError(
        f"--application {spec} takes {arity} positional arguments; a WSGI app takes "
        "(environ, start_response) and an ASGI app takes (scope, receive, send)"
    )


def _detect_class(cls: type[Any], spec: str) -> tuple[Interface, object]:
    # PEP 3333 allows a class as the WSGI app (instantiated per request with environ and
    # start_response); ASGI 2 used a class instantiated with the scope, then awaited with
    # (receive, send).
    arity = _positional_arity(cls)
    if arity == 1 and _is_async(_inherited_call(cls)):
        return "asgi", _asgi2_adapter(cls)
    if arity == 2:
        return "wsgi", cls
    raise ApplicationError(
        f"--application {spec} is a class that is neither a WSGI app class "
        "(__init__(environ, start_response)) nor an ASGI 2 app class "
        "(__init__(scope) with async __call__(receive, send)); point it at an app instance"
    )


def _inherited_call(cls: type[Any]) -> object:
    for base in cls.__mro__:
        if "__call__" in vars(base):
            return vars(base)["__call__"]
    return None


def _asgi2_adapter(cls: type[Any]) -> Callable[[_Scope, _Receive, _Send], Awaitable[None]]:
    async def asgi3(scope: _Scope, receive: _Receive, send: _Send) -> None:
        await cls(scope)(receive, send)

    return asgi3


def _is_function_like(obj: object) -> bool:
    return inspect.isroutine(obj) or isinstance(obj, functools.partial)


def _is_async(obj: object) -> bool:
    if obj is None:
        return False
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__func__", None)
    )


def _positional_arity(obj: object) -> int | None:
    """How many positional arguments a call takes; ``None`` when that cannot be told.

    Required parameters decide (``def app(environ, start_response, debug=False)`` is WSGI); a
    callable whose parameters all have defaults counts them all. ``*args`` gives ``None``.
    """
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return None
    required = [p for p in positional if p.default is p.empty]
    return len(required) if required else len(positional)
