"""A stage's checkpoint: the weights trained so far and the method's state, as safetensors (and the
state that is not a tensor as JSON), in the folder the run directory names for the stage."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mcit_bench.core.errors import DataError, storage_error
from mcit_bench.core.io import atomic_write_bytes
from mcit_bench.methods.base import Method
from mcit_bench.rundir import RunPaths, read_run_json


def save_checkpoint(paths: RunPaths, stage: int, model: nn.Module, trained: set[str], method: Method) -> None:
    """Trained weights and method state after ``stage``, written to a staging folder and renamed into
    place; a write the disk refuses leaves no staging folder behind and is reported as the checkpoint's."""
    path, staging = paths.checkpoint(stage), paths.checkpoint_staging(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write_checkpoint(staging, model, trained, method)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        refused = os_error_of(error)
        refused = storage_error(refused, path) if refused is not None else None
        if refused is None:
            raise
        raise refused from None
    shutil.rmtree(path, ignore_errors=True)
    os.replace(staging, path)

def os_error_of(error: BaseException) -> OSError | None:
    """The OS's refusal behind a failed write: safetensors reports one as a SafetensorError whose
    message carries the error code ("IoError(Os { code: 28, kind: StorageFull ... })")."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"\bcode: (\d+)", str(error)) if isinstance(error, SafetensorError) else None
    return OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else None


def write_checkpoint(staging: Path, model: nn.Module, trained: set[str], method: Method) -> None:
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if name in trained}
    save_file(weights, str(staging / "weights.safetensors"))
    state = method.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, str(staging / "method_state.safetensors"))
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    atomic_write_bytes(staging / "method_state.json", json.dumps(plain, sort_keys=True).encode())

def load_checkpoint(path: Path, model: nn.Module, method: Method) -> set[str]:
    """Load a checkpoint into ``model`` and ``method``; returns the names of the weights it held."""
    fix = "pass --overwrite to start the run again"
    state: dict[str, Any] = read_run_json(path / "method_state.json", fix)
    try:
        state.update(load_file(str(path / "method_state.safetensors")))
        weights = load_file(str(path / "weights.safetensors"))
    except (SafetensorError, OSError) as error:
        raise DataError(f"checkpoint {path} is damaged ({error}); {fix}") from None
    method.load_state_dict(state, model)
    missing = set(weights) - {name for name, _ in model.named_parameters()}
    if missing:
        raise DataError(f"checkpoint {path} holds weights the model lacks ({sorted(missing)[:3]}); "
                        f"it was written by another method or version; use --overwrite")
    model.load_state_dict(weights, strict=False)
    method.after_load(model)
    return set(weights)
