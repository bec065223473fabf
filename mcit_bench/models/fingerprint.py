"""Which weights a run used: a hash of the model folder, recorded in results and checked on submission."""

from __future__ import annotations

import hashlib
from pathlib import Path


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
