"""Atomic writes under a refusing file system: one sentence naming the file, the old file intact."""

from __future__ import annotations

import errno

import pytest

import mcit_bench.core.io as io
from mcit_bench.core.errors import StorageError, storage_error


def test_a_full_disk_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(StorageError, match=f"could not write {target}: no space is left on its device; free space"):
        io.atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.parametrize("code,reason", [(errno.EACCES, "permission is denied"), (errno.EROFS, "read-only"),
                                         (errno.EDQUOT, "quota is used up")])
def test_refused_writes_are_the_users_to_fix(code, reason):
    refused = storage_error(OSError(code, "refused", "/runs/x/progress.json"))
    assert refused is not None and str(refused).startswith("could not write /runs/x/progress.json: ")
    assert reason in str(refused)


def test_other_os_errors_stay_bugs():
    assert storage_error(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_a_full_disk_inside_safetensors_is_one_sentence_and_leaves_no_staging_folder(tmp_path, monkeypatch):
    """safetensors reports a refused write as a SafetensorError, not an OSError (issue 30)."""
    from safetensors import SafetensorError
    from torch import nn

    import mcit_bench.engine.checkpoint as checkpoint
    from mcit_bench.methods.base import Method, MethodOptions
    from mcit_bench.rundir import RunPaths

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", full)
    paths = RunPaths(tmp_path / "run")
    model = nn.Linear(2, 2)
    with pytest.raises(StorageError, match="checkpoints/stage1: no space is left on its device"):
        checkpoint.save_checkpoint(paths, 1, model, {"weight"}, Method(MethodOptions()))
    assert not paths.checkpoint_staging(1).exists() and not paths.checkpoint(1).exists()
