"""What tests/integration/test_fsdp.py launches under ``torchrun --nproc_per_node 2``: the sharded runs of
every method, one launch for all (a launch costs more than a quick run), then a sharded run stopped
after its first stage and resumed, then the shards of mcit-tiny as each process holds them.

    torchrun --nproc_per_node 2 tests/integration/fsdp_runs.py OUT CACHE METHOD:SEQUENCE:STEPS[:OPTIONS_JSON] ...

Writes OUT/shards-rank<r>.json: each sharded weight's global and local shape, and the bytes held.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from mcit_bench.cli import release_processes
from mcit_bench.config import RunConfig
from mcit_bench.engine.run import run_stream
from mcit_bench.engine.sharding import is_sharded, local_bytes, shard_model
from mcit_bench.models.loading import PRECISIONS, load_model


def sharded_run(method: str, sequence: str, steps: int, out: Path, cache: Path, options: dict | None = None,
                **kwargs) -> None:
    config = RunConfig(method=method, sequence=sequence, shard="fsdp", method_options=options or {},
                       training={"steps_per_task": steps, "batch_size": 16})
    run_stream(config, out, cache_root=cache, overwrite=not kwargs.get("resume", False), **kwargs)


def main(out: Path, cache: Path, runs: list[str]) -> None:
    for spec in runs:
        method, sequence, steps, *options = spec.split(":", 3)
        sharded_run(method, sequence, int(steps), out / "runs", cache, json.loads(options[0]) if options else None)
    # killed after stage 1, resumed: the uninterrupted matrix is the one above
    method, sequence, steps = runs[0].split(":")[:3]
    sharded_run(method, sequence, int(steps), out / "resumed", cache, stop_after_stage=1)
    sharded_run(method, sequence, int(steps), out / "resumed", cache, resume=True)

    accelerator = Accelerator(cpu=True)
    model, _ = load_model("mcit-tiny", PRECISIONS["fp32"])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    shard_model(model, accelerator, "fp32", keep=set())
    shapes = {name: {"global": list(p.shape), "local": list(p.to_local().shape)}
              for name, p in model.named_parameters() if is_sharded(p)}
    rank = accelerator.process_index
    (out / f"shards-rank{rank}.json").write_text(json.dumps({"shapes": shapes, "bytes": local_bytes(model)}))
    torch.distributed.barrier()


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
    finally:
        release_processes()
