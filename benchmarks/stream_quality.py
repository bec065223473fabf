"""Is the stream worth benchmarking? The acceptance figures of synth-coin from finished runs.

    python benchmarks/stream_quality.py RUNS_ROOT [--sequence synth-coin]

Reads RUNS_ROOT/<sequence>/<method>/<run>/results.json for every method and run found and prints,
per method, mean and standard deviation over its runs (seeds) of the summary metrics, the base
model's stage-0 row average, the lowest score a task reaches right after its own training (the
diagonal), task-selection accuracy after the last stage (methods that find the task themselves),
trainable and added parameters, wall time relative to seqft's and peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mcit_bench.scoring.continual import shown_summary


def mean_std(values: list[float | None]) -> str:
    if any(value is None for value in values):
        return "–"
    if all(isinstance(value, int) for value in values) and len(set(values)) == 1:
        return f"{values[0]:,}"  # parameter counts: the same in every seed
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def figures(results: dict) -> dict[str, float]:
    matrix = results["matrix"]
    tasks = len(results["tasks"])
    diagonal = [matrix[i + 1][i] for i in range(tasks)]
    summary = shown_summary(results["summary"], results["run"].get("upper_bound", False))
    return {
        "final_acc": summary["final_acc"],
        "MAA": summary["avg_incremental_acc"],
        "BWT": summary["bwt"] if summary["bwt"] is not None else 0.0,
        "forgetting": summary["forgetting"] if summary["forgetting"] is not None else 0.0,
        "FWT": summary["fwt"],  # none for an upper bound: shown as –
        "base row": sum(matrix[0]) / tasks,
        "min diagonal": min(diagonal),
        "task sel.": statistics.mean(selection.values()) if (selection := results["stages"][-1]["task_selection"])
        else None,
        "trainable": max(results["cost"]["trainable_params_per_stage"]),
        "added": results["cost"]["added_params"],
        "wall s": results["cost"]["wall_seconds"],
        "peak MB": results["cost"]["peak_memory_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_root", type=Path)
    parser.add_argument("--sequence", default="synth-coin")
    args = parser.parse_args()
    by_method: dict[str, list[dict[str, float]]] = {}
    diagonals: dict[str, list[list[float]]] = {}
    for path in sorted((args.runs_root / args.sequence).glob("*/*/results.json")):
        results = json.loads(path.read_text())
        method = results["run"]["method"]
        by_method.setdefault(method, []).append(figures(results))
        diagonals.setdefault(method, []).append([results["matrix"][i + 1][i] for i in range(len(results["tasks"]))])
        tasks = results["tasks"]
    columns = list(next(iter(by_method.values()))[0])
    seqft_wall = statistics.mean(run["wall s"] for run in by_method["seqft"]) if "seqft" in by_method else None
    print("| method | runs | " + " | ".join(columns) + " | wall / seqft |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for method, runs in by_method.items():
        cells = [mean_std([run[c] for run in runs]) for c in columns]
        ratio = f"{statistics.mean(run['wall s'] for run in runs) / seqft_wall:.2f}" if seqft_wall else "–"
        print(f"| {method} | {len(runs)} | " + " | ".join(cells) + f" | {ratio} |")
    print("\nright after training each task (mean over runs):")
    print("| method | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for method, rows in diagonals.items():
        print(f"| {method} | " + " | ".join(f"{statistics.mean(col):.1f}" for col in zip(*rows)) + " |")


if __name__ == "__main__":
    main()
