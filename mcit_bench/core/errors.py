"""Errors a user can cause. Each carries one sentence naming the file, the field and the fix."""

from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input from the user: the CLI prints the message alone and exits with status 2."""


class DataError(UserError):
    """A data file, record or image is missing or malformed."""


class ConfigError(UserError):
    """A configuration value, method, sequence or model name is wrong."""


class MetricError(UserError):
    """A metric cannot run here: an optional package or tool it needs is missing."""


class StorageError(UserError):
    """The file system refused a write: the disk is full, over quota, read-only or not ours."""


# The write failures a user fixes on their side (free space, choose another folder), not bugs.
_STORAGE_REASONS = {errno.ENOSPC: "no space is left on its device", errno.EDQUOT: "the disk quota is used up",
                    errno.EROFS: "its file system is read-only", errno.EACCES: "permission is denied",
                    errno.EPERM: "the operation is not permitted"}


# What else refuses a write whose target the user chose (--out, --output): a path that cannot exist.
_PATH_REASONS = {errno.ENOENT: "its folder does not exist and cannot be created",
                 errno.ENOTDIR: "a part of its path is a file, not a folder",
                 errno.EEXIST: "a part of its path is a file, not a folder",  # from making its folders
                 errno.EISDIR: "it is a folder"}


def storage_error(error: OSError, path: object = None, writing: bool = False) -> StorageError | None:
    """The one sentence for a refused write to ``path`` (or the error's own file name); None for
    any other OSError, which stays a bug to report. ``writing``: the error came from writing ``path``
    itself, so a path that cannot exist is the user's choice of place, not a bug."""
    where = path or error.filename or "a file"
    reason = _STORAGE_REASONS.get(error.errno)
    if reason is None and writing and error.errno in _PATH_REASONS:
        return StorageError(f"could not write {where}: {_PATH_REASONS[error.errno]}; choose another --output "
                            f"or --out")
    if reason is None:
        return None
    return StorageError(f"could not write {where}: {reason}; free space or choose a writable --output or "
                        f"--out, then run the command again (a run continues from its last verified stage "
                        f"with --resume; files already written are intact)")


def first_problem(error) -> tuple[str, str]:
    """(dotted field path, message) of a pydantic ``ValidationError``'s first problem: the one
    sentence every bad-input error reports."""
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or "(top level)", first["msg"]


def yaml_problem(error: Exception) -> str:
    """What a YAML parser found wrong, on one line: its problem and where (the parser's own message
    spans lines, quoting the file with a caret under the spot)."""
    problem = getattr(error, "problem", None) or getattr(error, "reason", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(problem or error).split())
