"""Atomic file writes and file locks: a reader sees the old file or the new one, never half of
either, and two writers of one file never interleave."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import storage_error


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
        refused = storage_error(error, path)
        if refused is None:
            raise
        raise refused from None


def _replace_with(path: Path, data: bytes) -> None:
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
