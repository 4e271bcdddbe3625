"""The release workflow builds what the Dockerfile says, with the actions it names pinned.

CI cannot run GitHub Actions: dev/test.sh lints the workflow with actionlint, and these tests check
what actionlint cannot know: that the build arguments are the Dockerfile's ARGs with the
Dockerfile's defaults (a new ARG, a renamed one or a version bump in one file only fails here), and
that every action is pinned by a full commit.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
DOCKERFILE = ROOT / "Dockerfile"
TARGET = "mse-base"

# What a release computes rather than copies from the Dockerfile: the date, the version, the
# commit and the repository's address (they fill the image's OCI labels).
COMPUTED = {"BUILD_DATE", "VERSION", "VCS_REF", "SOURCE_URL"}


def dockerfile_args(text: str) -> dict[str, set[str]]:
    """Every ARG name with its defaults (an ARG may be declared in several stages)."""
    args: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not re.match(r"ARG\s", line, flags=re.IGNORECASE):
            continue
        for word in shlex.split(line, comments=True)[1:]:
            name, _, default = word.partition("=")
            args.setdefault(name, set()).add(default)
    return args


def dockerfile_stages(text: str) -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE))


def workflow_build_args(build_args: str) -> dict[str, str]:
    """build-push-action's ``build-args``: one NAME=VALUE a line."""
    passed: dict[str, str] = {}
    for line in build_args.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        assert sep, f"build-args line without '=': {line!r}"
        assert name not in passed, f"build argument {name} passed twice"
        passed[name] = value
    return passed


def drift(passed: dict[str, str], dockerfile: str) -> list[str]:
    """How the workflow's build arguments differ from the Dockerfile's ARGs, a line each."""
    declared = dockerfile_args(dockerfile)
    problems = [f"{name}: not passed by the workflow" for name in sorted(declared.keys() - passed)]
    problems += [
        f"{name}: not an ARG of the Dockerfile" for name in sorted(passed.keys() - declared)
    ]
    for name in sorted(passed.keys() & declared.keys()):
        value, defaults = passed[name], declared[name]
        if name in COMPUTED:
            if "${{" not in value:
                problems.append(f"{name}: should be computed by the workflow, is {value!r}")
        elif len(defaults) != 1:
            problems.append(f"{name}: the Dockerfile's stages disagree: {sorted(defaults)}")
        elif value != next(iter(defaults)):
            problems.append(f"{name}: workflow passes {value!r}, Dockerfile has {defaults.pop()!r}")
    return problems


def _build_step() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("docker/build-push-action@")
    ]
    assert len(steps) == 1, f"expected one docker/build-push-action step, found {len(steps)}"
    return steps[0]


def test_the_workflow_passes_every_dockerfile_arg_with_its_default() -> None:
    passed = workflow_build_args(_build_step()["with"]["build-args"])
    assert drift(passed, DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "ARG GRAMINE_VERSION=1.9",
            "ARG GRAMINE_VERSION=1.10",
            ["GRAMINE_VERSION: workflow passes '1.9', Dockerfile has '1.10'"],
        ),
        ("ARG SGX_PSW_VERSION=", "ARG NEW_PIN=1\nARG SGX_PSW_VERSION=", ["NEW_PIN: not passed"]),
        (
            "ARG SGX_DCAP_VERSION=",
            "ARG DCAP_VERSION=",
            ["DCAP_VERSION: not passed", "SGX_DCAP_VERSION: not an ARG"],
        ),
        ('PACKAGES="sgx-aesm-service ', 'PACKAGES="', ["INTEL_SGX_PACKAGES: workflow passes"]),
    ],
    ids=["version-bumped", "arg-added", "arg-renamed", "package-dropped"],
)
def test_a_dockerfile_change_the_workflow_does_not_follow_is_reported(
    old: str, new: str, expected: list[str]
) -> None:
    passed = workflow_build_args(_build_step()["with"]["build-args"])
    dockerfile = DOCKERFILE.read_text()
    assert dockerfile.count(old) == 1
    problems = drift(passed, dockerfile.replace(old, new))
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problems


def test_a_computed_argument_written_as_a_constant_is_reported() -> None:
    passed = workflow_build_args(_build_step()["with"]["build-args"])
    passed["BUILD_DATE"] = "20240101"
    assert drift(passed, DOCKERFILE.read_text()) == [
        "BUILD_DATE: should be computed by the workflow, is '20240101'"
    ]


def test_the_workflow_builds_the_product_target_and_publishes_it_with_attestations() -> None:
    step = _build_step()["with"]
    assert TARGET in dockerfile_stages(DOCKERFILE.read_text())
    assert step["target"] == TARGET
    assert step["push"] is True
    assert step["sbom"] is True
    assert str(step["provenance"]).startswith("mode=")


def test_every_action_is_pinned_by_a_full_commit_with_its_version_named() -> None:
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.MULTILINE)
    assert len(uses) >= 5
    for ref, rest in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{ref}: not pinned by commit"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", rest), f"{ref}: no '# vX.Y.Z' comment"


def test_the_image_is_signed_by_digest_with_the_jobs_oidc_identity() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    assert job["permissions"]["id-token"] == "write"
    runs = [step.get("run", "") for step in job["steps"]]
    (sign,) = [run for run in runs if run.startswith("cosign sign")]
    assert "--yes" in sign and "@${DIGEST}" in sign
