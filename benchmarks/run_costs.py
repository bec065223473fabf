"""Wall time and peak memory of whole runs, one fresh process per run, in one sitting.

    python benchmarks/run_costs.py --methods seqft,joint [--subsets full,ci] [--seeds 0]
        [--configs benchmarks/tuned-synth-coin]

Prints, per (method, subset, seed): wall seconds, its ratio to the first method's run of the same
subset and seed, the same for the wall time less the oracle pass (a selecting method's oracle matrix
is the harness's report, not the method's cost; seqft has none), training seconds, peak resident
memory, and the summary metrics, read back from
each run's results.json. ``--configs DIR`` runs each method with ``DIR/<method>.yaml`` as its run
config (the tuned settings of the headline table), where that file exists; the others at defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_once(method: str, subset: str, seed: int, output: Path, config: Path | None = None) -> dict:
    command = [sys.executable, "-m", "mcit_bench.cli", "run", "--method", method, "--seed", str(seed),
               "--output", str(output), "--overwrite"]
    if subset != "full":
        command += ["--subset", subset]
    if config is not None:
        command += ["--config", str(config)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    run_id = f"seed{seed}" + ("" if subset == "full" else f"-{subset}")
    return json.loads((output / "synth-coin" / method / run_id / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="seqft,joint")
    parser.add_argument("--subsets", default="full,ci")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--output", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--configs", type=Path, default=None, help="folder of <method>.yaml run configs")
    args = parser.parse_args()
    output = args.output or Path(tempfile.mkdtemp(prefix="mcit-costs-"))
    methods = args.methods.split(",")
    first_wall: dict[tuple[str, int], float] = {}
    first_own: dict[tuple[str, int], float] = {}
    print(f"{'method':<10} {'subset':<6} {'seed':>4} {'wall s':>8} {'x ' + methods[0]:>10} {'no oracle':>9} "
          f"{'x ' + methods[0]:>10} {'train s':>8} "
          f"{'peak MiB':>9} {'ACC':>6} {'MFT':>6} {'MAA':>6} {'BWT':>7} {'fgt':>6} {'FWT':>6} {'base':>5}")
    for method in methods:
        config = args.configs / f"{method}.yaml" if args.configs else None
        for subset in args.subsets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                results = run_once(method, subset, seed, output, config if config and config.exists() else None)
                cost, summary = results["cost"], results["summary"]
                ratio = cost["wall_seconds"] / first_wall.setdefault((subset, seed), cost["wall_seconds"])
                own = cost["wall_seconds"] - cost["oracle_seconds"]
                own_ratio = own / first_own.setdefault((subset, seed), own)
                base = sum(results["matrix"][0]) / len(results["matrix"][0])

                def show(value):
                    return "   n/a" if value is None else f"{value:6.1f}"

                print(f"{method:<10} {subset:<6} {seed:>4} {cost['wall_seconds']:8.1f} {ratio:10.2f} "
                      f"{own:9.1f} {own_ratio:10.2f} {cost['train_seconds']:8.1f} "
                      f"{cost['peak_memory_mb']:9.0f} {show(summary['final_acc'])} "
                      f"{show(summary['mean_finetune_acc'])} "
                      f"{show(summary['avg_incremental_acc'])} {show(summary['bwt']):>7} {show(summary['forgetting'])} "
                      f"{show(summary['fwt'])} {base:5.1f}", flush=True)
    print(f"runs kept in {output}")


if __name__ == "__main__":
    main()
