"""The Python API: what the command line does, from a notebook, with results and leaderboards as pandas
data frames. The command line calls these functions; it keeps no second path.

    import mcit_bench as mb

    results = mb.run("seqft", subset="ci", seed=0)
    results.matrix_frame()                      # the accuracy matrix, task names as index and columns
    runs = mb.load_results("runs/synth-coin/*/seed*")
    runs.runs_frame().groupby("method")["final_acc"].agg(["mean", "std"])
    mb.leaderboard().to_pandas()                # one row per entry and matrix cell

Every refusal is a ``mcit_bench.UserError`` (a ``ConfigError`` for a bad setting, a ``DataError`` for a
bad file) carrying the one sentence the command line prints; nothing raises a bare KeyError.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcit_bench.board.leaderboard import Leaderboard, read_leaderboard
from mcit_bench.board.stats import consistent_results
from mcit_bench.config import RunConfig, parse_run_config
from mcit_bench.core.errors import ConfigError, DataError, UserError
from mcit_bench.evaluate_modules import metric_module
from mcit_bench.results.document import Results, parse_results
from mcit_bench.results.frames import cells_frame, runs_frame

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

__all__ = ["ConfigError", "DataError", "Leaderboard", "Results", "Runs", "UserError", "default_leaderboard_path",
           "leaderboard", "load_results", "metric_module", "run", "run_config"]

REPOSITORY_LEADERBOARD = Path("leaderboard/leaderboard.json")


def run(method: str, sequence: str | None = None, *, seed: int = 0, subset: str | None = None,
        variant: str | None = None, model: str | None = None, options: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None, output: str | Path = "runs", run_id: str | None = None,
        data_root: str | Path | None = None, cache_root: str | Path | None = None, resume: bool = False,
        overwrite: bool = False) -> Results:
    """Train ``method`` on ``sequence`` (default synth-coin) and return its results; ``options`` are the
    method's options (``mcit-bench ls methods``), ``training`` the training settings (lr, batch_size,
    steps_per_task, ...), validated as a run config file is."""
    raw: dict[str, Any] = {"method": method, "seed": seed}
    raw.update({name: value for name, value in (("sequence", sequence), ("subset", subset), ("variant", variant),
                                                ("model", model)) if value is not None})
    if options:
        raw["method_options"] = dict(options)
    if training:
        raw["training"] = dict(training)
    return run_config(parse_run_config(raw, "mcit_bench.run()"), output, run_id, data_root, cache_root, resume,
                      overwrite)


def run_config(config: RunConfig, output: str | Path = "runs", run_id: str | None = None,
               data_root: str | Path | None = None, cache_root: str | Path | None = None, resume: bool = False,
               overwrite: bool = False, console: Console | None = None) -> Results:
    """Run a resolved config to the end (``console``: where progress is shown; None: quiet)."""
    from mcit_bench.engine.run import run_stream  # torch and the models, only when something trains

    document = run_stream(config, Path(output), run_id, optional_path(data_root), optional_path(cache_root), resume,
                          overwrite, console)
    if document is None:  # run_stream stops early only when told to
        raise DataError("the run stopped before its last stage; continue it with resume=True")
    return parse_results(document, str(document["run"]["run_dir"]))


def optional_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


class Runs(list[Results]):
    """Finished runs (``load_results``), as data frames."""

    def to_pandas(self) -> pd.DataFrame:
        """One row per run and matrix cell (``results/frames.py``: CELL_COLUMNS)."""
        return cells_frame(results.frame_run() for results in self)

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its summary and cost (``results/frames.py``: RUN_COLUMNS)."""
        return runs_frame(results.frame_run() for results in self)


def load_results(*paths: str | Path) -> Runs:
    """Finished runs from run directories, results files or glob patterns of them (``runs/*/*/seed*``),
    each refused unless finished and consistent; a pattern that matches nothing is refused."""
    found: list[Path] = []
    for pattern in map(str, paths):
        matches = sorted(glob.glob(pattern)) if any(char in pattern for char in "*?[") else [pattern]
        if not matches or not all(Path(match).exists() for match in matches):
            raise ConfigError(f"no run directory or results file matches {pattern}; name finished runs "
                              f"(their folders or results.json)")
        found.extend(Path(match) for match in matches)
    if not found:
        raise ConfigError("load_results() was given no run; name run directories, results files or patterns")
    return Runs(consistent_results(found))


def default_leaderboard_path() -> Path:
    """The repository's leaderboard when run from a checkout, else the copy installed with the package."""
    if REPOSITORY_LEADERBOARD.is_file():
        return REPOSITORY_LEADERBOARD
    from importlib.resources import files

    return Path(str(files("mcit_bench.shipped_leaderboard").joinpath("leaderboard.json")))


def leaderboard(path: str | Path | None = None) -> Leaderboard:
    """A leaderboard file (default: ``default_leaderboard_path()``); ``.to_pandas()`` and ``.runs_frame()``."""
    where = Path(path) if path is not None else default_leaderboard_path()
    if not where.is_file():
        raise ConfigError(f"leaderboard file {where} does not exist; name a leaderboard JSON")
    return read_leaderboard(where)
