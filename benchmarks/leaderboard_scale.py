"""Validating and rendering a leaderboard of 10,000 entries: seconds, not minutes.

    python benchmarks/leaderboard_scale.py [--entries 10000]

Builds results documents for synth-coin's ci subset (8 tasks, random matrices with the summary
computed from them), then times: schema validation with the summary re-check of every document,
writing the leaderboard file, reading it back, grouping over seeds, and each output format.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mcit_bench.board import report
from mcit_bench.board.leaderboard import Leaderboard, entry_from_results, read_leaderboard, write_leaderboard
from mcit_bench.board.stats import aggregate
from mcit_bench.board.submit import verify_submission
from mcit_bench.data.stream import load_stream
from mcit_bench.results.document import SCHEMA_VERSION, parse_results
from mcit_bench.scoring.continual import summarize


def documents(count: int) -> list[dict]:
    stream = load_stream("synth-coin", "ci")
    tasks = stream.task_names
    rng = np.random.default_rng(0)
    docs = []
    for index in range(count):
        matrix = rng.uniform(0, 100, size=(len(tasks) + 1, len(tasks))).round(2)
        docs.append({
            "schema_version": SCHEMA_VERSION,
            "run": {"method": f"method{index // 50 % 100}", "method_options": {}, "config": {},
                    "model": f"model{index // 5000}",
                    "seed": index % 50,
                    "sequence": {"name": stream.name, "version": stream.version, "subset": "ci",
                                 "content_hash": stream.content_hash(), "tasks": tasks},
                    "harness_version": "0.1.0", "git": {"commit": None, "dirty": None}, "packages": {},
                    "device": "cpu", "upper_bound": False, "task_id_at_eval": bool(index % 2), "run_dir": "x"},
            "tasks": tasks,
            "task_info": {t: {"type": "vqa", "metric": "vqa_accuracy", "like": None, "test_samples": 24}
                          for t in tasks},
            "matrix": matrix.tolist(),
            "summary": {k: None if v is None else round(v, 4) for k, v in summarize(matrix).items()},
            "stages": [{"stage": i + 1, "tasks": [t], "steps": 40, "train_seconds": 1.0, "final_loss": 0.1,
                        "trainable_params": 1000, "task_selection": {}} for i, t in enumerate(tasks)],
            "cost": {"trainable_params_per_stage": [1000] * len(tasks), "added_params": 10, "total_params": 100,
                     "train_seconds": 8.0, "wall_seconds": 10.0, "peak_memory_mb": 1.0},
        })
    return docs


def timed(label: str, action):
    started = time.perf_counter()
    value = action()
    print(f"{label:<42} {time.perf_counter() - started:7.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    docs = documents(args.entries)
    started = time.perf_counter()

    def validate():
        entries = []
        for index, doc in enumerate(docs):
            results = parse_results(doc, f"doc {index}")
            verify_submission(results, f"doc {index}")
            entries.append(entry_from_results(results))
        return entries

    entries = timed(f"validate + verify {len(docs)} results", validate)
    folder = Path(tempfile.mkdtemp(prefix="mcit-board-"))
    path = folder / "leaderboard.json"
    timed("write leaderboard.json", lambda: write_leaderboard(Leaderboard(entries=entries), path))
    print(f"{'  file size':<42} {path.stat().st_size / 1e6:7.1f} MB")
    board = timed("read + validate leaderboard.json", lambda: read_leaderboard(path))
    rows = timed("group over seeds (mean, std, 95% CI)", lambda: aggregate(board.entries))
    print(f"{'  rows':<42} {len(rows):7d}")
    for name, render in (("markdown", report.markdown), ("csv", report.to_csv), ("latex", report.latex),
                         ("html", report.html_page)):
        text = timed(f"render {name}", lambda render=render: render(rows))
        print(f"{'  size':<42} {len(text) / 1e6:7.2f} MB")
    print(f"{'total':<42} {time.perf_counter() - started:7.2f} s")


if __name__ == "__main__":
    main()
