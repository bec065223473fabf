"""Regression check of a run against a baseline run: which summary metrics and matrix cells got worse."""

from __future__ import annotations

from dataclasses import dataclass

from mcit_bench.config import split_scored
from mcit_bench.core.errors import DataError
from mcit_bench.results.document import Results

# Forgetting is the one summary metric where lower is better.
LOWER_IS_BETTER = {"forgetting"}


@dataclass(frozen=True)
class Change:
    what: str  # a summary metric ("final_acc") or a cell ("R[after gqa, sqa]")
    baseline: float
    current: float

    def delta(self) -> float:
        return self.current - self.baseline

    def worse_by(self) -> float:
        """How much worse the current value is (negative when better)."""
        name = self.what.split("[")[0]
        return self.delta() if name in LOWER_IS_BETTER else -self.delta()


def compare(current: Results, baseline: Results, tolerance: float) -> tuple[list[Change], list[Change]]:
    """(regressions beyond ``tolerance``, every change beyond it either way), summary first, then cells."""
    if current.tasks != baseline.tasks:
        raise DataError(f"the runs have different task lists ({current.tasks} vs {baseline.tasks}); "
                        f"compare runs of the same sequence and subset")
    splits = [split_scored(run.run.config.validation) for run in (current, baseline)]
    if splits[0] != splits[1]:
        raise DataError(f"the runs are scored on different samples ({splits[0]} against {splits[1]}); compare "
                        f"runs scored on the same split")
    changes = []
    for name, value in baseline.summary.items():
        new = current.summary[name]
        if value is not None and new is not None:
            changes.append(Change(name, value, new))
    labels = ["base"] + [f"after {task}" for task in current.tasks]
    for i, (old_row, new_row) in enumerate(zip(baseline.matrix, current.matrix, strict=True)):
        for task, old, new in zip(current.tasks, old_row, new_row, strict=True):
            changes.append(Change(f"R[{labels[i]}, {task}]", old, new))
    moved = [change for change in changes if abs(change.delta()) > tolerance]
    regressions = [change for change in moved if change.worse_by() > tolerance]
    return regressions, moved


def where_ran(results: Results) -> dict[str, str]:
    """What of a run's environment can move its numbers, as text: each recorded package's version, the
    device, the model's weights, and whether its packages were the reference lock's."""
    run = results.run
    found = {name: version or "absent" for name, version in run.packages.items()}
    found["device"] = run.device
    found["model weights"] = run.model_weights[:12] if run.model_weights else "unrecorded"
    environment = run.environment
    found["environment"] = ("not recorded (a results file older than schema 3)" if environment is None
                            else f"lock {environment.lock}" if environment.lock is not None
                            else f"not the lock's ({len(environment.differs)} package"
                                 f"{' differs' if len(environment.differs) == 1 else 's differ'})")
    return found


def drift_between(current: Results, baseline: Results) -> str | None:
    """One line naming what differs between where two runs ran (None when nothing does)."""
    here, there = where_ran(current), where_ran(baseline)
    parts = [f"{name} {here.get(name, 'absent')} here, {there.get(name, 'absent')} in the baseline"
             for name in sorted(set(here) | set(there)) if here.get(name) != there.get(name)]
    return "the runs differ in where they ran: " + "; ".join(parts) if parts else None


def drift_among(runs: list[Results]) -> str | None:
    """One line naming each thing that differs among where several runs ran, with how many ran each way."""
    places = [where_ran(results) for results in runs]
    parts = []
    for name in sorted({name for place in places for name in place}):
        counts: dict[str, int] = {}
        for place in places:
            counts[place.get(name, "absent")] = counts.get(place.get(name, "absent"), 0) + 1
        if len(counts) > 1:
            parts.append(f"{name} " + ", ".join(f"{value} ({count} run{'s' * (count != 1)})"
                                                for value, count in sorted(counts.items())))
    return "the runs differ in where they ran: " + "; ".join(parts) if parts else None


def changes_table(moved: list[Change], tolerance: float):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Changes beyond ±{tolerance:g} (baseline → current)", title_justify="left")
    for heading in ("what", "baseline", "current", "change", "verdict"):
        table.add_column(heading, justify="left" if heading in ("what", "verdict") else "right")
    for change in moved:
        verdict = Text("regressed", style="red") if change.worse_by() > tolerance else Text("improved", style="green")
        # a cell's name ("R[after gqa, sqa]") and task names are text, never rich markup
        table.add_row(Text(change.what), f"{change.baseline:.2f}", f"{change.current:.2f}", f"{change.delta():+.2f}",
                      verdict)
    return table
