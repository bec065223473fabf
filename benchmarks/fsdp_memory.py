"""Memory per process with ``--shard fsdp``: two sharded processes against one unsharded, side by side.

Runs a method on the two-task quick slice unsharded (one process) and sharded (``torchrun
--nproc_per_node 2 ... --shard fsdp``), reads each run's ``cost.per_rank`` and prints, per process:
parameter bytes in shards and whole, peak memory, and the ratios sharded / unsharded. The target
(issue 16) is the sharded modules' bytes per process at most 0.55x of one process's.

On mcit-tiny the parameters are 7 MB against a process's ~600 MB of Python, torch and
transformers, so the peak-memory ratio shows the runtime, not the model; the parameter bytes are what
scales to a 7B model (docs/DISTRIBUTED.md's formula).

    python benchmarks/fsdp_memory.py [--method seqft]
    python benchmarks/fsdp_memory.py --table   # docs/DISTRIBUTED.md's table for LLaVA-1.5-7B and -13B

``--table`` prints, per process, every term of the memory a real-size run holds (mcit_bench/engine/memory.py:
frozen base in shards, what trains with its gradients and optimizer state, the reduction buffer,
autocast copies, activations, logits, the base gathered for evaluation and the key-value cache),
computed from LLaVA-1.5 built on the meta device with seqft's rank-128 LoRA: no memory, no download.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

QUICK = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "two_task_quick.yaml"


def per_rank(command: list[str], output: Path, method: str, *flags: str) -> list[dict]:
    subprocess.run(command + ["run", "--method", method, "--sequence", str(QUICK), "--output", str(output), *flags],
                   check=True, capture_output=True, text=True)
    results = json.loads((output / "two-task-quick" / method / "seed0" / "results.json").read_text())
    return results["cost"]["per_rank"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="seqft")
    parser.add_argument("--table", action="store_true", help="print the real-size memory table and stop")
    args = parser.parse_args()
    if args.table:
        from mcit_bench.engine.memory import memory_table

        print(memory_table())
        return
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch:
        one = per_rank([str(bin_dir / "mcit-bench")], Path(scratch) / "one", args.method)[0]
        two = per_rank([str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_port", "29541", "-m",
                        "mcit_bench.cli"], Path(scratch) / "two", args.method, "--shard", "fsdp")
        # the sharded runs' shards and whole parts, against the one process's whole model
        print(f"{args.method}: one process holds {one['param_bytes_replicated'] / 2**20:.2f} MiB of parameters, "
              f"peak {one['peak_memory_mb']:.0f} MiB")
        for rank in two:
            held = rank["param_bytes_sharded"] + rank["param_bytes_replicated"]
            print(f"  sharded, rank {rank['rank']}: {rank['param_bytes_sharded'] / 2**20:.2f} MiB in shards + "
                  f"{rank['param_bytes_replicated'] / 2**20:.2f} MiB whole = {held / 2**20:.2f} MiB "
                  f"({held / one['param_bytes_replicated']:.3f}x one process), peak {rank['peak_memory_mb']:.0f} MiB "
                  f"({rank['peak_memory_mb'] / one['peak_memory_mb']:.2f}x)")
        whole = two[0]["param_bytes_replicated"]
        sharded_alone = one["param_bytes_replicated"] - whole  # what the shards hold, whole, on one process
        print(f"  sharded modules per process: {two[0]['param_bytes_sharded'] / sharded_alone:.3f}x one process's "
              f"(target <= 0.55)")


if __name__ == "__main__":
    main()
