"""Where a run ran, as its results record it: the checkout, the package versions, the device, and
what each process held at its peak."""

from __future__ import annotations

import platform
import resource
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator


PACKAGES = ("mcit-bench", "torch", "transformers", "peft", "accelerate", "datasets", "numpy")


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def git_state() -> dict[str, Any]:
    """The commit of the harness checkout and whether it had local changes (None outside a checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_memory_mb() -> float:
    """This process's peak since :func:`reset_peak_memory`: CUDA's peak allocation, or on CPU the
    peak resident set (Linux's VmHWM, which can be reset; else the whole life's ru_maxrss)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        line = next(line for line in PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # KiB
    except (OSError, StopIteration, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory() -> None:
    """Forget the peak so far (after sharding: the whole model each process read before it cut its
    share is not what the run holds). On Linux writing 5 to clear_refs resets VmHWM."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak stays the whole life's


def rank_memory(model: torch.nn.Module, accelerator: Accelerator) -> list[dict[str, Any]]:
    """Every process's parameter bytes (in shards, replicated) and peak memory, in rank order."""
    from mcit_bench.engine.sharding import local_bytes

    held = local_bytes(model)
    mine = {"rank": accelerator.process_index, "param_bytes_sharded": held["sharded"],
            "param_bytes_replicated": held["replicated"], "peak_memory_mb": round(peak_memory_mb(), 1)}
    if accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return sorted(gather_object([mine]), key=lambda entry: entry["rank"])
