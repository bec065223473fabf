"""Where online EWC's importance comes from: each task's Fisher mass in a finished ``ewc`` run.

    python benchmarks/ewc_fisher_mass.py RUN_DIR

Reads the run's checkpoints (nothing is trained): after task k the importance is
Omega_k = gamma * Omega_{k-1} + F_k, so each task's own Fisher is F_k = Omega_k - gamma * Omega_{k-1}.
For each task it prints the Fisher's sum over all trainable parameters, its largest entry, the
module that holds most of it, and the share of the final importance that task's term still holds
(after gamma's decay). The Fisher is mammoth's (the answer's probability times the squared gradient
of its NLL), which is small where the model fits a task's answers and large where it stays unsure,
so the tasks with disagreeing annotators can own the importance whatever their accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

PREFIX = "importance."


def importance_after(run_dir: Path, stage: int) -> dict[str, torch.Tensor]:
    state = load_file(run_dir / "checkpoints" / f"stage{stage}" / "method_state.safetensors")
    return {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}


def task_fishers(run_dir: Path, stages: int, gamma: float) -> list[dict[str, torch.Tensor]]:
    """F_k for k = 1..stages, recovered from the accumulated importances."""
    fishers, previous = [], {}
    for stage in range(1, stages + 1):
        current = importance_after(run_dir, stage)
        fishers.append({name: value - gamma * previous.get(name, 0) for name, value in current.items()})
        previous = current
    return fishers


def shares_at_last_task(masses: list[float], gamma: float) -> list[float]:
    """Each earlier task's share (%) of the importance the last task trains against: task k's mass
    decayed by gamma once per later task before the last. The last task's own term is computed after
    its training and never penalises anything, so it has no share."""
    decayed = [mass * gamma ** (len(masses) - 2 - k) for k, mass in enumerate(masses[:-1])]
    return [100 * value / sum(decayed) for value in decayed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    results = json.loads((args.run_dir / "results.json").read_text())
    config = json.loads((args.run_dir / "config.json").read_text())
    if config["method"] != "ewc":
        raise SystemExit(f"{args.run_dir} is a {config['method']} run; give the directory of an ewc run")
    gamma = float(config["method_options"].get("gamma", 1.0))
    tasks = results["tasks"]
    fishers = task_fishers(args.run_dir, len(tasks), gamma)
    masses = [float(sum(f.sum() for f in fisher.values())) for fisher in fishers]
    shares = shares_at_last_task(masses, gamma)
    print(f"{args.run_dir}: gamma {gamma}")
    print(f"{'task':<12}{'Fisher sum':>12}{'largest':>10}{'share at last task':>20}  module with most")
    for k, (task, fisher) in enumerate(zip(tasks, fishers)):
        module = max(fisher, key=lambda name: float(fisher[name].sum()))
        share = f"{shares[k]:.1f}%" if k < len(shares) else "(not used)"
        print(f"{task:<12}{masses[k]:>12.3g}{float(max(f.max() for f in fisher.values())):>10.3g}{share:>20}  "
              f"{module}")


if __name__ == "__main__":
    main()
