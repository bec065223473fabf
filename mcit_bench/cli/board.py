"""The commands of results and the leaderboard: ``submit``, ``leaderboard``, ``check``, ``plot``,
``schema`` and ``convert``. None of them loads torch."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mcit_bench.api import REPOSITORY_LEADERBOARD as DEFAULT_LEADERBOARD
from mcit_bench.cli.app import app, console, errors, fail
from mcit_bench.core.errors import ConfigError, UserError


@app.command()
def submit(
    results: Annotated[list[Path], typer.Argument(help="results.json files or run directories")],
    leaderboard: Annotated[Path, typer.Option(help="leaderboard JSON to add to")] = DEFAULT_LEADERBOARD,
    replace: Annotated[bool, typer.Option(help="swap an entry of the same method, settings and seed for "
                                               "this run (a rerun after a fix)")] = False,
    reproduce: Annotated[bool, typer.Option(help="train each run again from its recorded config and seed and "
                                                 "require the same predictions (tier 'reproduced'; a whole run's "
                                                 "time each)")] = False,
    data_root: Annotated[Optional[Path], typer.Option(help="a published stream's files, to check the predictions "
                                                           "against its test split (tier 'verified')")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache for generated data and arrow files")] = None,
) -> None:
    """Verify finished runs and add them to a leaderboard; nothing is written unless every run passes.

    Each entry records how far it was proven (docs/RESULTS.md): unverified (a results file alone),
    self-checked (re-scored from its predictions), verified (those predictions answer the stream's own
    test split) or reproduced (--reproduce: trained again, the same predictions)."""
    from mcit_bench.board.submit import Proof, submit_all

    proof = Proof(data_root, cache_dir)
    if reproduce:
        from mcit_bench.engine.reproduce import reproduce_run

        proof = Proof(data_root, cache_dir, lambda run, run_dir: reproduce_run(run, run_dir, data_root, cache_dir))
    try:
        entries = submit_all(results, leaderboard, replace, proof)
    except UserError as error:
        fail(error)
    for entry in entries:
        console.print(f"added {entry.key.label()} seed {entry.seed} to {leaderboard} ({TIER_TOLD[entry.tier]})",
                      markup=False)


TIER_TOLD = {
    "reproduced": "reproduced: trained again from its config and seed, the same predictions",
    "verified": "verified: re-scored from predictions that answer the stream's own test split",
    "self-checked": "self-checked: re-scored from its predictions; pass --data-root to check them against the "
                    "test split",
    "unverified": "unverified: a results file alone; submit the run directory to re-score it",
    None: "tier not recorded",
}


class BoardFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"
    html = "html"
    json = "json"


def shown_leaderboard_path() -> Path:
    """The repository's leaderboard when run from a checkout, else the copy installed with the package (said)."""
    from mcit_bench.api import REPOSITORY_LEADERBOARD, default_leaderboard_path

    path = default_leaderboard_path()
    if path != REPOSITORY_LEADERBOARD:
        errors.print(f"showing the leaderboard shipped with mcit-bench ({path}); --leaderboard PATH shows another",
                     highlight=False, markup=False)
    return path


@app.command(name="leaderboard")
def show_leaderboard(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="run directories or results files to aggregate "
                                                               "instead of a leaderboard file")] = None,
    leaderboard: Annotated[Optional[Path], typer.Option(
        help="leaderboard JSON to show (default: leaderboard/leaderboard.json here, else the one shipped with "
             "mcit-bench)")] = None,
    format: Annotated[BoardFormat, typer.Option(help="output format")] = BoardFormat.table,
    out: Annotated[Optional[Path], typer.Option(help="write to this file instead of the terminal")] = None,
    sequence: Annotated[Optional[str], typer.Option(help="only this sequence (name@version or name)")] = None,
) -> None:
    """Show a leaderboard (or runs aggregated over seeds) as a table, Markdown, CSV, LaTeX, HTML or JSON."""
    from mcit_bench.board import report
    from mcit_bench.board.check import drift_among
    from mcit_bench.board.leaderboard import entry_from_results, read_leaderboard
    from mcit_bench.board.stats import aggregate, board_summary, consistent_results
    from mcit_bench.core.io import atomic_write_text

    drift = None
    try:
        if runs:
            loaded = consistent_results(runs)
            entries = [entry_from_results(results) for results in loaded]
            drift = drift_among(loaded)
        else:
            path = leaderboard or shown_leaderboard_path()
            if not path.is_file():
                raise ConfigError(f"leaderboard file {path} does not exist; pass --leaderboard PATH, or run "
                                  f"directories to aggregate")
            entries = read_leaderboard(path).entries
    except UserError as error:
        fail(error)
    if sequence:
        entries = [e for e in entries if sequence in (e.key.sequence, e.key.sequence.split("@")[0])]
    rows = aggregate(entries)
    if drift is not None:  # on stderr: the formats written to stdout stay clean
        errors.print(f"note: {drift}", highlight=False, markup=False)
    if format is BoardFormat.table and out is None:
        console.print(report.rich_table(rows))
        return
    render = {BoardFormat.table: report.markdown, BoardFormat.markdown: report.markdown, BoardFormat.csv: report.to_csv,
              BoardFormat.latex: report.latex, BoardFormat.html: report.html_page,
              BoardFormat.json: lambda rows: json.dumps(board_summary(rows), indent=2, sort_keys=True) + "\n"}
    text = render[format](rows)
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out} ({len(rows)} rows)", markup=False, highlight=False)


@app.command()
def check(
    results: Annotated[Path, typer.Argument(help="results.json or run directory to check")],
    against: Annotated[Path, typer.Option(help="baseline results.json or run directory")],
    tolerance: Annotated[float, typer.Option(help="allowed drop in points (0-100 scale)", min=0)] = 1.0,
) -> None:
    """Exit non-zero when a summary metric or matrix cell is worse than the baseline by more than the tolerance."""
    from mcit_bench.board.check import changes_table, compare, drift_between
    from mcit_bench.results.document import load_results

    try:
        current, baseline = load_results(results), load_results(against)
        regressions, moved = compare(current, baseline, tolerance)
    except UserError as error:
        fail(error)
    if moved:
        console.print(changes_table(moved, tolerance))
    drift = drift_between(current, baseline)
    if drift is not None:  # a difference in where the runs ran explains a change before anyone guesses
        console.print(f"note: {drift}", markup=False, highlight=False)
    if regressions:
        errors.print("regression:", style="bold red", end=" ")
        errors.print(f"{len(regressions)} value(s) of {results} are worse than {against} by more than {tolerance:g}",
                     highlight=False, markup=False)
        raise typer.Exit(code=1)
    console.print(f"ok: nothing in {results} is worse than {against} by more than {tolerance:g}", markup=False,
                  highlight=False)


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="run directories or results files (several: curves overlaid)")],
    out: Annotated[Optional[Path], typer.Option(help="folder for the PNGs (default: beside the first run)")] = None,
) -> None:
    """Write PNGs: each run's accuracy-matrix heatmap and the stage-wise accuracy curves of all runs."""
    from mcit_bench.board.plots import plot_runs
    from mcit_bench.results.document import load_results

    try:
        written = plot_runs([(path, load_results(path)) for path in runs], out)
    except UserError as error:
        fail(error)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)


@app.command(name="schema")
def export_schema(
    out: Annotated[Path, typer.Option(help="where to write the JSON Schema")] = Path("leaderboard/schema.json"),
) -> None:
    """Write the JSON Schema of results.json (the file the leaderboard accepts)."""
    from mcit_bench.core.io import atomic_write_text
    from mcit_bench.results.document import json_schema

    atomic_write_text(out, json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    console.print(f"wrote {out}", markup=False, highlight=False)


@app.command()
def convert(
    files: Annotated[list[Path], typer.Argument(help="results.json files or leaderboard files of an older version")],
) -> None:
    """Rewrite results or leaderboard files of an older version as the current one, in place."""
    from mcit_bench.board.leaderboard import LEADERBOARD_VERSION, convert_leaderboard
    from mcit_bench.core.io import atomic_write_json, read_bounded_json
    from mcit_bench.results.document import SCHEMA_VERSION, converted_results

    for path in files:
        try:
            data = read_bounded_json(path, "file")
            if isinstance(data, dict) and "leaderboard_version" in data:
                found, now = convert_leaderboard(path), f"leaderboard_version {LEADERBOARD_VERSION}"
            else:
                data, found = converted_results(data, str(path))
                atomic_write_json(path, data)
                now = f"schema_version {SCHEMA_VERSION}"
        except UserError as error:
            fail(error)
        console.print(f"{path}: version {found} -> {now}", highlight=False, markup=False, soft_wrap=True)
