"""Wall time and peak memory of whole runs, one fresh process per run, in one sitting.

    python benchmarks/run_costs.py --methods seqft,joint [--subsets full,ci] [--seeds 0]
        [--configs benchmarks/tuned-synth-coin] [--bracket]

Prints, per (method, subset, seed): wall seconds and its ratio to the reference (the first method's
run of the same subset and seed), the same for the wall time less the oracle pass (a selecting
method's oracle matrix is the harness's report, not the method's cost; seqft has none), training
seconds and their ratio, peak resident memory, and the summary metrics, read back from each run's
results.json. ``--configs DIR`` runs each method with ``DIR/<method>.yaml`` as its run config (the
tuned settings of the headline table), where that file exists; the others at defaults.

``--bracket`` runs the reference again after every other method (reference, A, reference, B,
reference, ...) and divides each method's figures by the mean of the two reference runs around it:
this machine's speed drifts by a fifth within an hour and a half (docs/BENCHMARKS.md), so a ratio to
a reference run an hour earlier says as much about the drift as about the method. It costs a
reference run per method.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cost:
    method: str
    results: dict

    @property
    def wall(self) -> float:
        return self.results["cost"]["wall_seconds"]

    @property
    def own(self) -> float:
        """The wall time less the oracle pass."""
        return self.wall - self.results["cost"]["oracle_seconds"]

    @property
    def train(self) -> float:
        return self.results["cost"]["train_seconds"]


def run_once(method: str, subset: str, seed: int, output: Path, config: Path | None = None) -> Cost:
    command = [sys.executable, "-m", "mcit_bench.cli", "run", "--method", method, "--seed", str(seed),
               "--output", str(output), "--overwrite"]
    if subset != "full":
        command += ["--subset", subset]
    if config is not None:
        command += ["--config", str(config)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    run_id = f"seed{seed}" + ("" if subset == "full" else f"-{subset}")
    return Cost(method, json.loads((output / "synth-coin" / method / run_id / "results.json").read_text()))


def schedule(methods: list[str], bracket: bool) -> list[str]:
    """The order of the runs: the methods, or with ``bracket`` the reference between every two."""
    if not bracket:
        return methods
    order = [methods[0]]
    for method in methods[1:]:
        order += [method, methods[0]]
    return order


def references(runs: list[Cost], bracket: bool) -> list[list[Cost]]:
    """For each run, the reference runs its ratios divide by: the two around it when bracketed (a
    reference run is its own), else the first run."""
    if not bracket:
        return [[runs[0]] for _ in runs]
    return [[run] if index % 2 == 0 else [runs[index - 1], runs[index + 1]] for index, run in enumerate(runs)]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def show(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.1f}"


def row(run: Cost, refs: list[Cost], subset: str, seed: int) -> str:
    summary = run.results["summary"]
    base = sum(run.results["matrix"][0]) / len(run.results["matrix"][0])
    return (f"{run.method:<10} {subset:<6} {seed:>4} {run.wall:8.1f} {run.wall / mean([r.wall for r in refs]):10.2f} "
            f"{run.own:9.1f} {run.own / mean([r.own for r in refs]):10.2f} {run.train:8.1f} "
            f"{run.train / mean([r.train for r in refs]):8.2f} {run.results['cost']['peak_memory_mb']:9.0f} "
            f"{show(summary['final_acc'])} {show(summary['mean_finetune_acc'])} "
            f"{show(summary['avg_incremental_acc'])} {show(summary['bwt']):>7} {show(summary['forgetting'])} "
            f"{show(summary['fwt'])} {base:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="seqft,joint")
    parser.add_argument("--subsets", default="full,ci")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--output", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--configs", type=Path, default=None, help="folder of <method>.yaml run configs")
    parser.add_argument("--bracket", action="store_true", help="the reference again after every method")
    args = parser.parse_args()
    output = args.output or Path(tempfile.mkdtemp(prefix="mcit-costs-"))
    methods = args.methods.split(",")
    reference = methods[0]
    print(f"{'method':<10} {'subset':<6} {'seed':>4} {'wall s':>8} {'x ' + reference:>10} {'no oracle':>9} "
          f"{'x ' + reference:>10} {'train s':>8} {'x ' + reference:>8} "
          f"{'peak MiB':>9} {'ACC':>6} {'MFT':>6} {'MAA':>6} {'BWT':>7} {'fgt':>6} {'FWT':>6} {'base':>5}", flush=True)
    for subset in args.subsets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            runs = []
            for method in schedule(methods, args.bracket):
                config = args.configs / f"{method}.yaml" if args.configs else None
                runs.append(run_once(method, subset, seed, output, config if config and config.exists() else None))
                print(f"# {method} ran in {runs[-1].wall:.1f} s", file=sys.stderr, flush=True)
            for run, refs in zip(runs, references(runs, args.bracket)):
                print(row(run, refs, subset, seed), flush=True)
    print(f"runs kept in {output}")


if __name__ == "__main__":
    main()
