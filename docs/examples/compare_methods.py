"""Compare methods across seeds with pandas, from the shipped leaderboard (each at the settings its
equal-budget study chose): final accuracy and BWT as mean and std over seeds, and the stage curves
(mean accuracy on the tasks seen so far) in one plot.

    python docs/examples/compare_methods.py [OUT.png]

The same frames come from your own runs: ``mb.load_results("runs/synth-coin/*/seed*")``.
tests/unit/test_api.py runs this script.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import mcit_bench as mb  # noqa: E402

METHODS = ["seqft", "replay", "dmole"]

board = mb.leaderboard()
runs = board.runs_frame()
runs = runs[runs["method"].isin(METHODS) & runs["settings"].str.startswith("tuned-") & (runs["subset"].isna())]
table = runs.groupby("method")[["final_acc", "bwt"]].agg(["mean", "std"]).round(1)
print(table.to_string())

# the stage curve: after stage i, the mean over the tasks trained so far (columns 0..i-1 of row i)
cells = board.to_pandas()
cells = cells[cells["method"].isin(METHODS) & cells["settings"].str.startswith("tuned-") & (cells["subset"].isna())]
order = {task: position for position, task in enumerate(cells["task"].drop_duplicates())}
seen = cells[(cells["stage"] > 0) & (cells["task"].map(order) < cells["stage"])]
curves = seen.groupby(["method", "seed", "stage"])["score"].mean().groupby(["method", "stage"]).mean().unstack(0)
print(curves.round(1).to_string())

figure, axes = plt.subplots(figsize=(6, 4))
curves.plot(ax=axes, marker="o")
axes.set_xlabel("stage")
axes.set_ylabel("mean accuracy on the tasks seen so far")
figure.tight_layout()
figure.savefig(sys.argv[1] if len(sys.argv) > 1 else "stage_curves.png")
