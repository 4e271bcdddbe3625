"""The import rules each ``_internal`` subpackage's docstring states, enforced.

A newcomer reads the parts from the file tree; these rules keep the tree honest: the verifier a
client installs never pulls in the launcher or the server, and the enclave's program never
imports the verifier.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mse_base"
SHARED = ("mse_base.errors", "mse_base._internal.files", "mse_base._internal.utc")

# Module prefix -> the prefixes it may import (besides itself and SHARED).
ALLOWED: dict[str, tuple[str, ...]] = {
    "mse_base._internal.dcap": (),
    "mse_base.verify": ("mse_base._internal.dcap",),
    "mse_base._internal.simulation": (
        "mse_base._internal.dcap",
        "mse_base._internal.enclave.sigstruct",
    ),
    "mse_base._internal.enclave.supervise": (
        "mse_base._internal.enclave",
        "mse_base._internal.dcap",
        "mse_base._internal.simulation",
        "mse_base.verify",
    ),
    # The pipeline stages encrypted code files without decrypting them.
    "mse_base._internal.enclave": ("mse_base._internal.provision.codefile",),
    # The owner's side: verify, then push. Only the client imports the verifier.
    "mse_base._internal.provision": ("mse_base.verify", "mse_base._internal.dcap"),
    # The enclave and the host pipeline use these two: they must not pull in the verifier.
    "mse_base._internal.provision.protocol": (),
    "mse_base._internal.provision.codefile": (),
    "mse_base._internal.runtime": (
        "mse_base._internal.enclave.deployment",
        "mse_base._internal.enclave.manifest",
        "mse_base._internal.dcap.quote",
        "mse_base._internal.dcap.ratls",
        "mse_base._internal.simulation",
        "mse_base._internal.enclave.codetar",
        "mse_base._internal.enclave.requirements",
        "mse_base._internal.provision.protocol",
        "mse_base._internal.provision.codefile",
    ),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import mod" imports the submodule; "from mod import name" the module.
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _exists(sub) else node.module)
    return {name for name in found if name.startswith("mse_base.")}


def _rule(module: str) -> tuple[str, tuple[str, ...]] | None:
    # The longest matching prefix wins (supervise before the rest of enclave).
    for prefix in sorted(ALLOWED, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, ALLOWED[prefix]
    return None


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _exists(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _rule(_module_name(p)) is not None)


def test_every_part_is_covered() -> None:
    internal = {p.parent.name for p in (PACKAGE / "_internal").glob("*/__init__.py")}
    assert internal == {"dcap", "enclave", "provision", "runtime", "simulation"}
    assert len(MODULES) > 25


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_follow_the_layout(path: Path) -> None:
    module = _module_name(path)
    rule = _rule(module)
    assert rule is not None
    own, allowed = rule
    own_part = own.removesuffix(".supervise")
    bad = sorted(
        name
        for name in _imports(path)
        if _exists(name) and not any(_is_under(name, p) for p in (own_part, *allowed, *SHARED))
    )
    assert not bad, f"{module} imports {bad}, which its part's docstring does not allow"


@pytest.mark.parametrize("part", ["dcap", "enclave", "provision", "runtime", "simulation"])
def test_each_part_says_what_it_owns(part: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "_internal" / part / "__init__.py").read_text()))
    assert doc and "May import" in doc
