"""`mcit-bench submit RUN_DIR` and `mcit-bench leaderboard` without torch, against the same commands in
a process that loads torch first (what they loaded before issue 26's first steps), side by side.

    python benchmarks/board_startup.py RUN_DIR [--repeats 5]

RUN_DIR is a finished run of a shipped sequence (e.g. `mcit-bench run --subset ci`); each submit goes
to a fresh copy of the shipped leaderboard. Prints the median wall time of each command both ways
and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "leaderboard.json"
COMMAND = "import sys; {preload}from mcit_bench.cli import main; sys.argv = {argv!r}; main()"


def seconds(argv: list[str], preload: bool) -> float:
    code = COMMAND.format(preload="import torch; " if preload else "", argv=["mcit-bench", *argv])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        def submit() -> list[str]:
            board = Path(scratch) / f"board-{time.perf_counter_ns()}.json"
            shutil.copy(BOARD, board)
            return ["submit", str(args.run_dir), "--leaderboard", str(board)]

        commands = {"submit RUN_DIR": submit, "leaderboard --format csv": lambda: ["leaderboard", "--format", "csv",
                                                                                    "--leaderboard", str(BOARD)]}
        for name, argv in commands.items():
            without = [seconds(argv(), preload=False) for _ in range(args.repeats)]
            with_torch = [seconds(argv(), preload=True) for _ in range(args.repeats)]
            lean, loaded = statistics.median(without), statistics.median(with_torch)
            print(f"{name}: {lean:.2f} s without torch, {loaded:.2f} s with it loaded first "
                  f"(ratio {lean / loaded:.2f}, median of {args.repeats})")


if __name__ == "__main__":
    main()
