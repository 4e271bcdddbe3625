"""Checking the app's requirements.txt against the environment, without installing anything.

Installing at run time would make the enclave's content depend on the day it starts; instead the
image must already hold what the app needs, and we say precisely what is missing.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from mse_base.errors import Error, UsageError


class MissingRequirements(Error):
    """The environment does not satisfy the app's requirements.txt."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            "the environment does not satisfy requirements.txt: "
            + "; ".join(missing)
            + ". Install them in the image (RUN pip3 install ...) and rebuild it"
        )
        self.missing = missing


def _requirement_lines(path: Path) -> list[tuple[int, str]]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        lines.append((number, line))
    return lines


def check_requirements(code_dir: Path) -> int:
    """Return how many requirements were checked; raise listing every one that is not met."""
    path = code_dir / "requirements.txt"
    if not path.is_file():
        return 0
    missing: list[str] = []
    checked = 0
    for number, line in _requirement_lines(path):
        if line.startswith("-"):
            # Options (index URLs, hashes, includes) say where to fetch from, which does not
            # apply to an environment that is already built.
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise UsageError(
                f"requirements.txt line {number} ({line!r}) is not a requirement: {exc}"
            ) from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        checked += 1
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{requirement} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            missing.append(f"{requirement} (installed: {installed})")
    if missing:
        raise MissingRequirements(missing)
    return checked
