"""The import rules each part states in its docstring, read from there and enforced.

A newcomer reads the parts from the file tree; these rules keep the tree honest: the verifier a
client installs never pulls in the launcher or the server, and the enclave's program never
imports the verifier. The rules live in one place, the "May import ..." sentence of each
``_internal`` subpackage's docstring (and of a module that states a rule of its own); every
double-backquoted name there is a module the part may import, relative to ``mse_base._internal``
unless it starts with ``mse_base.``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mse_base"
PARTS = ("dcap", "enclave", "provision", "runtime", "simulation")
SHARED = (
    "mse_base.errors",
    "mse_base._internal.files",
    "mse_base._internal.utc",
    "mse_base._internal.extras",
)
# Not an _internal part, so its rule is written here: the public verifier stands on dcap alone.
PUBLIC_VERIFY = ("mse_base.verify", ("mse_base._internal.dcap", *SHARED))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _stated_rule(path: Path) -> tuple[str, ...] | None:
    """The modules the docstring's "May import ..." sentence names, up to "Never"; or None."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"May import (.*?)(?:Never|\Z)", doc, re.S)
    if match is None:
        return None
    names = re.findall(r"``([\w.]+)``", match.group(1))
    return tuple(n if n.startswith("mse_base.") else f"mse_base._internal.{n}" for n in names)


def _rules() -> dict[str, tuple[str, ...]]:
    rules = {PUBLIC_VERIFY[0]: PUBLIC_VERIFY[1]}
    for path in (PACKAGE / "_internal").rglob("*.py"):
        stated = _stated_rule(path)
        if stated is not None:
            rules[_module_name(path)] = stated
    return rules


RULES = _rules()


def _rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    # The most specific statement wins: a module's own rule over its part's.
    for prefix in sorted(RULES, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, RULES[prefix]
    raise AssertionError(f"{module}: no part states its import rule")


def _imports(path: Path) -> tuple[set[str], list[int]]:
    found: set[str] = set()
    relative: list[int] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append(node.lineno)
                continue
            # "from pkg import mod" imports the submodule; "from mod import name" the module.
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _exists(sub) else str(node.module))
    return {n for n in found if n.startswith("mse_base.") and _exists(n)}, relative


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


CHECKED = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if _module_name(p).startswith(("mse_base._internal.", "mse_base.verify"))
)


def test_every_part_states_its_rule() -> None:
    found = {p.parent.name for p in (PACKAGE / "_internal").glob("*/__init__.py")}
    assert found == set(PARTS)
    for part in PARTS:
        stated = RULES.get(f"mse_base._internal.{part}")
        assert stated, f"_internal/{part}/__init__.py has no 'May import ``...``' sentence"
        assert all(_exists(name) for name in stated), (part, stated)
    assert len(CHECKED) > 30


def _violations(module: str, path: Path) -> list[str]:
    imported, relative = _imports(path)
    bad = [f"relative import at line {line}" for line in relative]
    if module in SHARED:
        # The shared modules serve every part, so they may import none of them.
        bad += sorted(n for n in imported if not any(_under(n, s) for s in SHARED))
    else:
        owner, allowed = _rule_for(module)
        # A module may always import its own part (the part a module's own rule belongs to).
        part = ".".join(owner.split(".")[:3]) if owner.startswith("mse_base._internal.") else owner
        bad += sorted(
            n for n in imported if not any(_under(n, p) for p in (part, *allowed, *SHARED))
        )
    return bad


@pytest.mark.parametrize("path", CHECKED, ids=_module_name)
def test_imports_follow_the_stated_rules(path: Path) -> None:
    module = _module_name(path)
    bad = _violations(module, path)
    assert not bad, f"{module}: {bad}: not allowed by its part's docstring"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("mse_base._internal.dcap.fake", "from mse_base._internal.runtime import bootstrap"),
        ("mse_base._internal.dcap.fake", "import mse_base._internal.simulation.pki"),
        ("mse_base._internal.enclave.fake", "from mse_base.verify import Verifier"),
        ("mse_base._internal.runtime.fake", "from mse_base._internal.dcap import chain"),
        ("mse_base._internal.files", "from mse_base._internal.dcap.quote import HEADER_SIZE"),
        ("mse_base._internal.dcap.fake", "from ..runtime import bootstrap"),
    ],
)
def test_a_broken_rule_is_caught(tmp_path: Path, module: str, source: str) -> None:
    path = tmp_path / "fake.py"
    path.write_text(source + "\n")
    assert _violations(module, path)
