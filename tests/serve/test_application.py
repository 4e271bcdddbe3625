"""load_application: imports from the code directory and detects WSGI or ASGI from the object."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mse_base._internal.runtime.application import ApplicationError, load_application
from mse_base.errors import UsageError

APPS = Path(__file__).parent / "apps"


@pytest.fixture(autouse=True)
def _isolated_imports() -> Iterator[None]:
    # Each test imports from APPS; keep sys.path and sys.modules as they were.
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("spec", "interface"),
    [
        ("flask_app:app", "wsgi"),
        ("asgi_app:app", "asgi"),
        ("shapes:wsgi_function", "wsgi"),
        ("shapes:asgi_function", "asgi"),
        ("shapes:WSGIClass", "wsgi"),
        ("shapes:ASGI2Class", "asgi"),
        ("shapes:asgi_instance", "asgi"),
        ("shapes:wsgi_instance", "wsgi"),
        ("shapes:sync_asgi_middleware", "asgi"),
        ("shapes:Holder.app", "wsgi"),
        ("shapes:wsgi_with_option", "wsgi"),
        ("shapes:wsgi_star_args", "wsgi"),
    ],
)
def test_detects_interface(spec: str, interface: str) -> None:
    app = load_application(spec, APPS)
    assert app.interface == interface
    assert callable(app.target)


def test_detects_fastapi_as_asgi() -> None:
    assert load_application("fastapi_app:app", APPS).interface == "asgi"


def test_code_dir_comes_first_on_sys_path(tmp_path: Path) -> None:
    # A module in the code directory shadows an installed one of the same name.
    (tmp_path / "flask.py").write_text("def app(environ, start_response):\n    return []\n")
    sys.modules.pop("flask", None)
    app = load_application("flask:app", tmp_path)
    assert app.interface == "wsgi"
    assert sys.path[0] == str(tmp_path.resolve())


def test_asgi2_class_is_adapted_to_asgi3() -> None:
    app = load_application("shapes:ASGI2Class", APPS)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app.target({"type": "http"}, receive, send))  # type: ignore[operator]
    assert sent[-1] == {"type": "http.response.body", "body": b"asgi2 class"}


@pytest.mark.parametrize("spec", ["app", "app:", ":app", "app:app:x", "1app:app", "a-b:app", ""])
def test_bad_spec_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match=r"--application .* module:attribute"):
        load_application(spec, APPS)


def test_missing_module_names_it() -> None:
    with pytest.raises(ApplicationError, match=r"'no_such_module'.*ModuleNotFoundError"):
        load_application("no_such_module:app", APPS)


def test_import_error_inside_the_app_names_module_and_cause() -> None:
    with pytest.raises(ApplicationError, match=r"'broken_app'.*module_that_does_not_exist"):
        load_application("broken_app:app", APPS)


def test_exception_during_import_names_module_and_cause() -> None:
    with pytest.raises(ApplicationError, match=r"'raising_app'.*database URL is not configured"):
        load_application("raising_app:app", APPS)


def test_missing_attribute() -> None:
    with pytest.raises(ApplicationError, match=r"no attribute 'nope'"):
        load_application("flask_app:nope", APPS)


def test_not_callable() -> None:
    with pytest.raises(ApplicationError, match="not a WSGI or ASGI application"):
        load_application("shapes:not_callable", APPS)


def test_wrong_arity() -> None:
    with pytest.raises(ApplicationError, match="4 positional arguments"):
        load_application("shapes:wrong_arity", APPS)
