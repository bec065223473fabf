"""What tests/integration/test_text_only_ranks.py launches under ``torchrun --nproc_per_node 2``: each
method on the text-only stream, under DDP (``ddp``) or with the frozen base sharded (``fsdp``).

    torchrun --nproc_per_node 2 tests/integration/text_only_runs.py MODE OUT CACHE STREAM DATA BATCH METHOD...
"""

import sys
from pathlib import Path

from mcit_bench.cli import release_processes
from mcit_bench.config import RunConfig
from mcit_bench.engine.run import run_stream


def main(mode: str, out: Path, cache: Path, stream: str, data: Path, batch: int, methods: list[str]) -> None:
    for method in methods:
        config = RunConfig(method=method, sequence=stream, training={"batch_size": batch},
                           shard="fsdp" if mode == "fsdp" else None)
        run_stream(config, out, data_root=data, cache_root=cache)


if __name__ == "__main__":
    try:
        main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]), int(sys.argv[6]),
             sys.argv[7:])
    finally:
        release_processes()
