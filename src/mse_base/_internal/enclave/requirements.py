"""Checking the app's requirements.txt against the environment, without installing anything.

Installing at run time would make the enclave's content depend on the day it starts; instead the
image must already hold what the app needs, and we say precisely what is missing.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from mse_base._internal.files import InputRefused, read_limited
from mse_base.errors import Error, UsageError

# A requirements.txt lists packages, one a line; even a lock file with hashes for hundreds of
# packages is well under 1 MiB. 4 MiB leaves room for that and keeps a hostile one from being
# read into memory whole (it came in the code tar, which may unpack to 1 GiB).
MAX_REQUIREMENTS_SIZE = 4 * 1024 * 1024


class MissingRequirements(Error):
    """The environment does not satisfy the app's requirements.txt."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            "the environment does not satisfy requirements.txt: "
            + "; ".join(missing)
            + ". Install them in the image (RUN pip3 install ...) and rebuild it"
        )
        self.missing = missing


def _requirement_lines(path: Path) -> list[tuple[int, str]] | None:
    """The requirement lines with their numbers; None when the app has no requirements.txt."""
    try:
        # nofollow: the file came in the code tar, and a link there, however it got past the
        # tar checks, must not make mse-run read (and quote in its errors) a file of the host.
        text = read_limited(path, MAX_REQUIREMENTS_SIZE, nofollow=True).decode("utf-8")
    except InputRefused as exc:
        if exc.missing:
            return None
        raise UsageError(
            f"the app's requirements.txt {exc} ({path}); it should list the packages the app "
            "needs, one a line"
        ) from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the app's requirements.txt is not UTF-8 text (byte {exc.start} of {path}); save "
            "it as UTF-8"
        ) from None
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        lines.append((number, line))
    return lines


def app_requirements(code_dir: Path) -> list[Requirement]:
    """The app's requirements that apply to this Python (markers evaluated); [] without a
    requirements.txt. Raise naming the first line that is not a requirement."""
    # Read, not tested with is_file() first: a requirements.txt that is a directory, say, is
    # refused rather than silently taken for none.
    lines = _requirement_lines(code_dir / "requirements.txt")
    requirements = []
    for number, line in lines or []:
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
        requirements.append(requirement)
    return requirements


def check_requirements(code_dir: Path) -> int:
    """Return how many requirements were checked; raise listing every one that is not met."""
    missing: list[str] = []
    requirements = app_requirements(code_dir)
    for requirement in requirements:
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
    return len(requirements)
