"""Atomic file writes, file locks and file hashing: a reader sees the old file or the new one, never
half of either, and two writers of one file never interleave."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import DataError, storage_error


def _new_file_mode() -> int:
    """What ``open`` would give a new file here: 0o666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    The file keeps the mode of the one it replaces (a new one gets the umask's default): the
    temporary file's private 0600 would otherwise survive the rename.
    """
    path = Path(path)
    try:
        _replace_with(path, data)
    except OSError as error:
        refused = storage_error(error, path, writing=True)
        if refused is None:
            raise
        raise refused from None


def _replace_with(path: Path, data: bytes) -> None:
    if path.is_dir():  # renaming over a folder fails with whatever the OS says ('.': EBUSY); say it once
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = _new_file_mode()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any, strict: bool = False) -> None:
    """Stable, diff-friendly JSON: sorted keys, two-space indent, trailing newline. ``strict``
    refuses NaN and infinities (``ValueError``), which are not JSON and which other readers reject."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False,
                                       allow_nan=not strict) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through ``<path>.lock`` beside it) until the block ends.

    ``flock`` works on Linux and macOS; the lock dies with its process, so a killed writer never
    leaves it held. Every read-modify-write of a shared file goes inside one.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 over a model folder's safetensors files (names and bytes); None for anything else (a
    hub id, a folder without safetensors)."""
    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


MAX_JSON_BYTES = 64 << 20  # a results file of the largest stream is under a megabyte, the shipped board too


def read_bounded_json(path: Path, what: str) -> Any:
    """A JSON file within sane bounds (size, nesting, strict numbers), or one sentence saying why not."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    if size > MAX_JSON_BYTES:
        raise DataError(f"{what} {path} is {size >> 20} MiB, more than mcit-bench writes "
                        f"({MAX_JSON_BYTES >> 20} MiB); it is not a {what} of mcit-bench")

    def refuse_constant(name: str) -> float:
        raise DataError(f"{what} {path} holds {name}, which is not a JSON number; a finished run writes "
                        f"finite numbers only")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise DataError(f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text") from None
    except RecursionError:
        raise DataError(f"{what} {path} is nested too deeply to be a {what} of mcit-bench") from None
