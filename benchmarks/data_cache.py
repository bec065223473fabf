"""A task split's first load (parse the JSON, check it, write arrow) against its second (memory-map
the arrow cache), side by side on the same file. Target: the second load at least 10x faster.

The file is a LLaVA-format training split of --records conversations (VQAv2's train split has
about 440k; CoIN's per-task files range from 10k to 200k), built from the CoIN fixture's records
with fresh ids, so its size is realistic without a download.

    python benchmarks/data_cache.py [--records 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mcit_bench.data.splits import load_split

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "coin" / "Instruction_Type1" / "VQAv2"


def write_split(folder: Path, records: int) -> Path:
    template = json.loads((FIXTURE / "train.json").read_text())[0]
    entries = [{**template, "id": str(index), "image": f"COCO2014/train2014/{index:012d}.jpg"}
               for index in range(records)]
    path = folder / "train.json"
    path.write_text(json.dumps(entries))
    return path


def timed_load(path: Path, cache: Path) -> tuple[float, int]:
    started = time.perf_counter()
    dataset = load_split(path, path.parent, "vqa", "train", cache)
    rows = len(dataset["id"])  # touch a column so the lazy memory map is really read
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    firsts, seconds = [], []
    with tempfile.TemporaryDirectory() as scratch:
        path = write_split(Path(scratch), args.records)
        for repeat in range(args.repeats):
            cache = Path(scratch) / f"cache{repeat}"
            first, rows = timed_load(path, cache)
            second, again = timed_load(path, cache)
            assert rows == again == args.records
            firsts.append(first)
            seconds.append(second)
            shutil.rmtree(cache)
    first, second = statistics.median(firsts), statistics.median(seconds)
    print(f"{args.records:,} records, median of {args.repeats}")
    print(f"first load (parse + arrow): {first:.2f} s")
    print(f"second load (arrow cache):  {second:.3f} s")
    print(f"speed-up: {first / second:.0f}x (target >= 10x)")


if __name__ == "__main__":
    main()
