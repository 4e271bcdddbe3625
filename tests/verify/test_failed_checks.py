"""``failed_check`` is API: every raise site names one, the set is pinned, docs/verify.md lists it.

The source is parsed rather than trusted: a new ``raise CollateralError(...)`` without
``check=`` fails here, before a client sees a rejection it cannot classify.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mse_base.errors import FAILED_CHECKS, VerificationError
from mse_base.verify import FAILED_CHECKS as EXPORTED
from tests.pins import PINNED_JSON_FIELDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "mse_base"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# The values, as docs/verify.md documents them. Adding one is a new API value (add it here and to
# docs/verify.md); renaming or removing one breaks clients.
PINNED = {
    "quote.format",
    "quote.unsupported",
    "pck.chain",
    "pck.chain.expired",
    "pck.chain.not_yet_valid",
    "pck.extensions",
    "pck.revoked",
    "qe_report.signature",
    "qe_report.binding",
    "quote.signature",
    "collateral.unavailable",
    "collateral.signing_chain",
    "collateral.signing_chain.expired",
    "collateral.signing_chain.not_yet_valid",
    "collateral.signing_chain.revoked",
    "collateral.tcb_info.format",
    "collateral.tcb_info.signature",
    "collateral.tcb_info.expired",
    "collateral.tcb_info.not_yet_valid",
    "collateral.qe_identity.format",
    "collateral.qe_identity.signature",
    "collateral.qe_identity.expired",
    "collateral.qe_identity.not_yet_valid",
    "collateral.pck_crl.format",
    "collateral.pck_crl.signature",
    "collateral.pck_crl.expired",
    "collateral.pck_crl.not_yet_valid",
    "collateral.root_ca_crl.format",
    "collateral.root_ca_crl.signature",
    "collateral.root_ca_crl.expired",
    "collateral.root_ca_crl.not_yet_valid",
    "collateral.platform",
    "qe.identity",
    "tcb.platform_not_supported",
    "tcb.qe_not_supported",
    "tcb.qe_status_unknown",
    "tcb.revoked",
    "policy.tcb_status",
    "policy.mrenclave",
    "policy.mrsigner",
    "policy.isv_prod_id",
    "policy.isv_svn",
    "policy.debug",
    "policy.deployment",
    "ratls.unreachable",
    "ratls.format",
    "ratls.self_signature",
    "ratls.expired",
    "ratls.not_yet_valid",
    "ratls.evidence",
    "ratls.key_binding",
    "ratls.quotes_disagree",
}


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in SOURCES}


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """VerificationError and every class in the package derived from it (by name)."""
    family = {"VerificationError"}
    classes = [n for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for node in classes:
            bases = {
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            }
            if node.name not in family and bases & family:
                family.add(node.name)
                grew = True
    return family


def _own_init(trees: dict[Path, ast.Module], family: set[str]) -> dict[str, ast.FunctionDef]:
    """Error classes with their own __init__ (which then passes check= itself)."""
    found = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            # VerificationError's own __init__ is where check= is defined.
            if isinstance(node, ast.ClassDef) and node.name in family - {"VerificationError"}:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        found[node.name] = item
    return found


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _check_keyword(call: ast.Call) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == "check"), None)


def test_the_set_of_failed_checks_is_pinned() -> None:
    assert set(FAILED_CHECKS) == PINNED
    assert EXPORTED is FAILED_CHECKS
    for value in FAILED_CHECKS:
        # Dotted lower-case words: stable to match on, safe in any log or metric label.
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", value), value


def test_every_raise_site_names_its_failed_check() -> None:
    trees = _trees()
    family = _error_classes(trees)
    # The family as the code defines it (the AST walk must not miss a public class).
    import mse_base.verify as verify

    public = {
        name
        for name in verify.__all__
        if isinstance(getattr(verify, name), type)
        and issubclass(getattr(verify, name), VerificationError)
    }
    assert public <= family and len(public) == 9
    own_init = _own_init(trees, family)
    missing = []
    sites = 0
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _called_name(node) not in family:
                continue
            if isinstance(node.func, ast.Name) and node.func.id in own_init:
                continue
            sites += 1
            if _check_keyword(node) is None:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    for name, init in own_init.items():
        supers = [
            n
            for n in ast.walk(init)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "__init__"
        ]
        assert supers and all(_check_keyword(c) is not None for c in supers), name
    assert not missing, f"raise sites without check=: {missing}"
    # Enough sites found that the walk cannot have silently matched nothing.
    assert sites > 100


def _failed_check_parameters(trees: dict[Path, ast.Module]) -> dict[str, dict[int | str, str]]:
    """Functions with parameters annotated ``FailedCheck``: name -> {position and name: name}."""
    found: dict[str, dict[int | str, str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [*node.args.posonlyargs, *node.args.args]
            slots: dict[int | str, str] = {}
            for index, arg in enumerate(params):
                if arg.annotation is not None and "FailedCheck" in ast.unparse(arg.annotation):
                    # A method's positions count self/cls; calls through an attribute do not.
                    first = params[0].arg if params else ""
                    slots[index - (first in ("self", "cls"))] = arg.arg
                    slots[arg.arg] = arg.arg
            for arg in node.args.kwonlyargs:
                if arg.annotation is not None and "FailedCheck" in ast.unparse(arg.annotation):
                    slots[arg.arg] = arg.arg
            if slots:
                found[node.name] = slots
    return found


def _strings(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def raised_failed_checks(trees: dict[Path, ast.Module]) -> set[str]:
    """The values that reach a raise: a literal in a ``check=`` keyword, in the arguments of
    ``ChainChecks``/``CrlChecks``, passed to a parameter typed ``FailedCheck``, or assigned to a
    name or table typed ``FailedCheck``. Anything else (``progress.passed("qe.identity")``, a
    docstring) is not a raise site and does not count."""
    typed_params = _failed_check_parameters(trees)
    found: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.AnnAssign)
                and node.value is not None
                and "FailedCheck" in ast.unparse(node.annotation)
            ):
                found |= _strings(node.value)
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            value = _check_keyword(node)
            if value is not None:
                found |= _strings(value)
            if name in ("ChainChecks", "CrlChecks"):
                for arg in (*node.args, *(k.value for k in node.keywords)):
                    found |= _strings(arg)
            slots = typed_params.get(name or "", {})
            for index, arg in enumerate(node.args):
                if index in slots:
                    found |= _strings(arg)
            for keyword in node.keywords:
                if keyword.arg in slots:
                    found |= _strings(keyword.value)
    return found & FAILED_CHECKS


def test_every_literal_is_a_failed_check_and_every_failed_check_is_raised() -> None:
    """A literal passed as check= must be a known value, and each known value must reach a
    raise site somewhere: none is documented but unreachable."""
    trees = _trees()
    family = _error_classes(trees)
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) in family:
                value = _check_keyword(node)
                if isinstance(value, ast.Constant):
                    assert value.value in FAILED_CHECKS, (path, node.lineno, value.value)
    definition = {p: t for p, t in trees.items() if p == PACKAGE / "errors.py"}
    assert not raised_failed_checks(definition)  # the Literal itself is no raise site
    raised = raised_failed_checks(trees)
    assert raised == FAILED_CHECKS, sorted(FAILED_CHECKS - raised)


def test_a_check_only_marked_passed_is_not_counted_as_raised(tmp_path: Path) -> None:
    """The collector above must not count a value that is only recorded as passed: the review's
    mutation (every ``check="qe.identity"`` renamed) left ``progress.passed("qe.identity")``."""
    source = (PACKAGE / "verify" / "verifier.py").read_text()
    assert 'check="qe.identity"' in source
    mutated = source.replace('check="qe.identity"', 'check="collateral.platform"')
    trees = _trees()
    trees[PACKAGE / "verify" / "verifier.py"] = ast.parse(mutated)
    assert "qe.identity" in source.replace('check="qe.identity"', "")  # still mentioned...
    assert "qe.identity" not in raised_failed_checks(trees)  # ...but no longer raised


def test_the_reference_documents_every_failed_check_and_json_field() -> None:
    section = (ROOT / "docs" / "verify.md").read_text()
    table = section[section.index("<!-- failed_check values -->") :]
    table = table[: table.index("<!-- end failed_check values -->")]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.MULTILINE))
    assert documented == FAILED_CHECKS
    fields = section[section.index("<!-- JSON fields -->") :]
    fields = fields[: fields.index("<!-- end JSON fields -->")]
    assert tuple(re.findall(r"^\| `([a-z0-9_]+)` \|", fields, flags=re.MULTILINE)) == (
        PINNED_JSON_FIELDS
    )


def test_one_serialiser_gives_the_pinned_json_fields() -> None:
    """The library writes the fields (a result and a partial alike); the CLI only puts its own
    three keys before them."""
    import dataclasses

    from mse_base._cli.verify import _verify_json
    from mse_base.verify import PartialResult, VerificationResult

    assert tuple(PartialResult().to_json()) == PINNED_JSON_FIELDS[3:]
    shown = _verify_json(PartialResult().to_json(), ["x"], "quote.format")
    assert tuple(shown) == PINNED_JSON_FIELDS
    assert shown["failed_check"] == "quote.format" and shown["verified"] is False
    # PartialResult.of copies a result field by field: the two must have the same fields.
    names = [f.name for f in dataclasses.fields(PartialResult)]
    assert names == [f.name for f in dataclasses.fields(VerificationResult)]
