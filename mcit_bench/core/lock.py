"""The reference environment's lock (the repository's ``lock/cpu.txt``, shipped in the package as
``mcit_bench.shipped_lock``): its pins, its digest, whether the running environment matches it, and
whether it satisfies pyproject.toml's ranges. A run records the outcome (``run.environment``), so a
result names the environment it was made in, and a drift between two results is explained."""

from __future__ import annotations

import functools
import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mcit_bench.core.errors import ConfigError

LOCK_FILE = "cpu.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def shipped_lock_text() -> str | None:
    """The lock this mcit-bench ships; None in a build without it."""
    try:
        return files("mcit_bench.shipped_lock").joinpath(LOCK_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def lock_pins(text: str) -> dict[str, str]:
    """{canonical package name: pinned version} of a requirements lock (``name==version`` lines)."""
    pins = {}
    for line in text.splitlines():
        found = PIN.match(line.strip())
        if found:
            pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


def lock_digest(text: str) -> str:
    """``cpu-`` and the first 12 hex of the lock's sha256: what results and leaderboard entries name."""
    return "cpu-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def same_version(installed: str, pinned: str) -> bool:
    try:
        return Version(installed) == Version(pinned)
    except InvalidVersion:
        return installed == pinned


@functools.cache
def installed_version(name: str) -> str | None:
    """The installed version of ``name``, read once a process: a run records it after every run, and
    the metadata scan costs a quarter second for the lock's hundred packages."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_record(text: str | None = None) -> dict[str, Any]:
    """What results record of the environment: ``lock`` the lock's digest when every package it pins
    is installed at its pinned version, else None with ``differs`` naming each package that is not."""
    text = shipped_lock_text() if text is None else text
    if text is None:
        return {"lock": None, "differs": ["this mcit-bench ships no lock"]}
    differs = []
    for name, pinned in sorted(lock_pins(text).items()):
        installed = installed_version(name)
        if installed is None:
            differs.append(f"{name} not installed (lock {pinned})")
        elif not same_version(installed, pinned):
            differs.append(f"{name} {installed} (lock {pinned})")
    return {"lock": None if differs else lock_digest(text), "differs": differs}


def lock_problems(dependencies: list[str], text: str) -> list[str]:
    """Each of pyproject.toml's requirements (``dependencies``, as written there) that the lock leaves
    out or pins outside its range, as one phrase; empty when the lock satisfies them all."""
    pins = lock_pins(text)
    problems: list[str] = []
    for written in dict.fromkeys(dependencies):  # an extra may repeat a requirement
        try:
            requirement = Requirement(written)
        except InvalidRequirement:
            problems.append(f"{written!r} is not a requirement")
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not pinned")
        elif requirement.specifier and not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name} is pinned at {pinned}, outside {requirement.specifier}")
    return problems


def read_lock_file(path: Path) -> str:
    """A lock file's text, refused in one sentence when it cannot be read or pins nothing."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror or str(error)
        raise ConfigError(f"lock {path} cannot be read ({reason}); name a lock written by 'bash .ci/lock'") from None
    if not lock_pins(text):
        raise ConfigError(f"lock {path} pins no package (no 'name==version' line); rewrite it with 'bash .ci/lock'")
    return text


def pyproject_requirements(path: Path) -> list[str]:
    """Every requirement pyproject.toml declares: the dependencies and those of each extra."""
    try:
        project = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("project", {})
        written = list(project.get("dependencies", []))
        written += [item for extra in project.get("optional-dependencies", {}).values() for item in extra]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError, TypeError) as error:
        raise ConfigError(f"{path} cannot be read as a pyproject.toml with [project] dependencies "
                          f"({' '.join(str(error).split()) or type(error).__name__})") from None
    if not all(isinstance(item, str) for item in written):
        raise ConfigError(f"{path}: [project] dependencies must be strings")
    return written
