"""The ``mcit-bench`` command line: parses, calls library functions, prints with rich."""

from __future__ import annotations

import json
import os
import sys

# Nothing at run time reaches the network unless the user asks (HF_HUB_OFFLINE=0): a model or data
# set is read from a folder or the local Hugging Face cache, and a missing one fails at once in one
# sentence instead of after minutes of retries. Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from enum import Enum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from mcit_bench.core.errors import ConfigError, UserError, storage_error  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal continual instruction tuning: run methods on task streams, score them.")
console = Console(stderr=False)
DEFAULT_LEADERBOARD = Path("leaderboard/leaderboard.json")
errors = Console(stderr=True, soft_wrap=True)  # one sentence per error, never broken inside a path


def _fail(error: UserError) -> None:
    _print_error(error)
    raise typer.Exit(code=2)


def _print_error(error: UserError) -> None:
    # the message is plain text: brackets in it ("[a-z0-9]", "[ci]") are not rich markup
    errors.print("error:", style="bold red", end=" ")
    errors.print(str(error), highlight=False, markup=False)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (16, 0.5, true, text)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--option {pair!r} must look like name=value (for example lora_rank=8)")
        key, value = pair.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


@app.command()
def run(
    method: Annotated[Optional[str], typer.Option(help="method to run (see 'mcit-bench ls methods'; default "
                                                       "seqft)")] = None,
    sequence: Annotated[Optional[str], typer.Option(help="task sequence name or YAML file (default "
                                                         "synth-coin)")] = None,
    subset: Annotated[Optional[str], typer.Option(help="a preset of the sequence, e.g. 'ci' (small, fast)")] = None,
    variant: Annotated[Optional[str], typer.Option(help="instruction variant of the sequence (CoIN: original, "
                                                        "diverse, ten-types)")] = None,
    model: Annotated[Optional[str], typer.Option(help="registered model, local folder or Hugging Face id "
                                                      "(default mcit-tiny)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="training seed (data order, initialisation; default "
                                                     "0)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="several seeds, e.g. 0,1,2: one run each, then mean, std "
                                                      "and 95% CI")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="folder with a real benchmark's files")] = None,
    output: Annotated[Path, typer.Option(help="root of run directories")] = Path("runs"),
    run_id: Annotated[Optional[str], typer.Option(help="name of the run directory (default "
                                                       "seed<N>[-subset][-variant][-validation])")] = None,
    resume: Annotated[bool, typer.Option(help="continue an unfinished run after its last finished stage")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    full: Annotated[bool, typer.Option(help="seqft/joint: train all language-model weights instead of LoRA")] = False,
    option: Annotated[list[str], typer.Option(help="method option name=value (repeatable)")] = [],
    steps_per_task: Annotated[Optional[int], typer.Option(help="training steps per task (default: the stream's)")] \
        = None,
    batch_size: Annotated[Optional[int], typer.Option(help="training micro-batch size (over all processes)")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="micro-batches per optimiser step: the global batch "
                                                           "is batch size x this")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16 (bfloat16 weights and autocast; "
                                                          "float32 for what trains)")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="recompute activations in backward (less "
                                                              "memory)")] = False,
    max_length: Annotated[Optional[int], typer.Option(help="tokens of a training sequence, image placeholders "
                                                           "included (default: the model's limit)")] = None,
    shard: Annotated[Optional[str], typer.Option(help="fsdp: shard the frozen base model over the processes "
                                                      "(FSDP2; launch with torchrun, docs/DISTRIBUTED.md)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of run settings, the fields of a run's "
                                                       "config.json (a flag given wins over it)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache for generated data and arrow files")] = None,
    tuned: Annotated[Optional[Path], typer.Option(help="tuning.json of 'mcit-bench tune': train with the settings "
                                                       "its study chose")] = None,
) -> None:
    """Train a method on a task stream, evaluating every task after every stage."""
    from mcit_bench.config import parse_run_config
    from mcit_bench.results import print_results
    from mcit_bench.runner import run_stream

    finished: list[Path] = []
    try:
        raw = _raw_config(config, method, sequence, subset, variant, model, option, full, precision,
                          {"steps_per_task": steps_per_task, "batch_size": batch_size, "grad_accum": grad_accum,
                           "lr": lr, "gradient_checkpointing": gradient_checkpointing or None,
                           "max_length": max_length})
        seed_list = _parse_seeds(seeds) if seeds else [seed if seed is not None else raw.get("seed", 0)]
        if len(seed_list) > 1 and run_id:
            raise ConfigError("--run-id names one run; leave it out with --seeds (the runs are named seed<N>)")
        if shard is not None:
            raw["shard"] = shard
        source = str(config) if config else "command line"
        # under accelerate launch / torchrun only the first process prints
        shown = console if os.environ.get("RANK", "0") == "0" else Console(quiet=True)
        for one_seed in seed_list:
            if tuned is not None:
                from mcit_bench.tune import read_tuning, tuned_config

                run_config = tuned_config({**raw, "seed": one_seed}, read_tuning(tuned), tuned, source)
            else:
                run_config = parse_run_config({**raw, "seed": one_seed}, source)
            results = run_stream(run_config, output, run_id, data_root, cache_dir, resume, overwrite, shown)
            print_results(results, shown)
            finished.append(Path(results["run"]["run_dir"]) / "results.json")
            shown.print(f"results: {finished[-1]}")
        if len(finished) > 1:
            from mcit_bench import report
            from mcit_bench.leaderboard import aggregate, results_entries

            shown.print(report.rich_table(aggregate(results_entries(finished))))
    except UserError as error:
        _fail(error)


def _raw_config(config: Path | None, method: str | None, sequence: str | None, subset: str | None,
                variant: str | None, model: str | None, option: list[str], full: bool, precision: str | None,
                training_flags: dict[str, Any]) -> dict[str, Any]:
    """The run settings of a config file with the command line's flags on top. A flag left out is
    None and keeps the file's value (or RunConfig's default): a default flag must not silently turn
    a file's ``method: ewc`` back into seqft."""
    from mcit_bench.config import load_config_file

    raw: dict[str, Any] = load_config_file(config) if config else {}
    flags = {"method": method, "sequence": sequence, "subset": subset, "variant": variant, "model": model}
    raw.update({key: value for key, value in flags.items() if value is not None})
    method_options = dict(raw.get("method_options", {}))
    method_options.update(_parse_options(option))
    if full:
        method_options["full"] = True
    raw["method_options"] = method_options
    raw["training"] = {**raw.get("training", {}),
                       **{key: value for key, value in training_flags.items() if value is not None}}
    if precision is not None:
        raw["precision"] = precision
    return raw


@app.command()
def tune(
    method: Annotated[str, typer.Option(help="method to tune (see 'mcit-bench ls methods')")],
    trials: Annotated[int, typer.Option(help="the study's budget: trials in all, the same for every method")],
    sequence: Annotated[Optional[str], typer.Option(help="task sequence name or YAML file (default "
                                                         "synth-coin)")] = None,
    subset: Annotated[Optional[str], typer.Option(help="a preset of the sequence, e.g. 'ci'")] = None,
    variant: Annotated[Optional[str], typer.Option(help="instruction variant of the sequence")] = None,
    model: Annotated[Optional[str], typer.Option(help="registered model, local folder or Hugging Face id "
                                                      "(default mcit-tiny)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="training seed of every trial, and the sampler's in the "
                                                     "process that makes the study (default 0)")] = None,
    space: Annotated[Optional[Path], typer.Option(help="YAML search space replacing the method's own "
                                                       "(name: {log: [lo, hi]} | {range: [lo, hi]} | "
                                                       "{choices: [...]})")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL shared by every worker of the study "
                                                        "(default: an SQLite file in the study's folder)")] = None,
    study_name: Annotated[Optional[str], typer.Option(help="name of the study and its folder (default "
                                                           "tune-seed<N>[-subset])")] = None,
    validation_fraction: Annotated[float, typer.Option(help="share of each task's training data held out "
                                                            "for scoring trials")] = 0.1,
    validation_max: Annotated[int, typer.Option(help="at most this many validation samples per task")] = 100,
    data_root: Annotated[Optional[Path], typer.Option(help="folder with a real benchmark's files")] = None,
    output: Annotated[Path, typer.Option(help="root of run directories")] = Path("runs"),
    option: Annotated[list[str], typer.Option(help="fixed method option name=value (repeatable)")] = [],
    steps_per_task: Annotated[Optional[int], typer.Option(help="training steps per task (default: the "
                                                                "stream's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="training micro-batch size")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="micro-batches per optimiser step")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of fixed run settings")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache for generated data and arrow files")] = None,
) -> None:
    """Search a method's hyper-parameters on a validation split carved from the training data (Optuna).

    The same command resumes a stopped study or joins a running one; a trial whose worker died is
    marked failed and run again.
    """
    from mcit_bench.config import RunConfig, parse_run_config
    from mcit_bench.tune import TuneRequest, method_space, read_space_file
    from mcit_bench.tune import tune as run_study

    try:
        raw = _raw_config(config, method, sequence, subset, variant, model, option, False, precision,
                          {"steps_per_task": steps_per_task, "batch_size": batch_size, "grad_accum": grad_accum})
        if seed is not None:
            raw["seed"] = seed
        raw["validation"] = {"fraction": validation_fraction, "max_per_task": validation_max}
        base = parse_run_config(raw, str(config) if config else "command line")
        request = TuneRequest(base=base, trials=trials,
                              space=read_space_file(space) if space else method_space(method),
                              output_root=output, study_name=study_name or f"tune-seed{base.seed}"
                              + (f"-{base.subset}" if base.subset else ""), storage=storage, data_root=data_root,
                              cache_root=cache_dir)
        summary = run_study(request, console)
    except UserError as error:
        _fail(error)
    table = Table(title=f"{method}: {summary['study']} (final accuracy on the validation split)")
    for column in ("trial", "state", "value", "params"):
        table.add_column(column)
    for trial in summary["trials"]:
        value = "" if trial["value"] is None else f"{trial['value']:.2f}"
        state = (f"pruned after stage {trial['stopped_after_stage']}" if trial["stopped_after_stage"] is not None
                 else trial["state"])
        table.add_row(str(trial["number"]), state, value, json.dumps(trial["params"], sort_keys=True))
    console.print(table)
    best = summary["best"]
    console.print(f"best: trial {best['number']} ({best['value']:.2f}) with {json.dumps(best['params'])}",
                  markup=False)
    identity = summary["identity"]
    named = "".join(f" --{key} {identity[key]}" for key in ("sequence", "subset", "variant", "model")
                    if identity[key] != RunConfig.model_fields[key].default)  # a run must name what the study did
    console.print(f"train with it: mcit-bench run --method {method}{named} --tuned "
                  f"{summary['folder']}/tuning.json", markup=False)


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be integers separated by commas, for example 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} must name at least one seed, each once")
    return seeds


@app.command()
def score(run_dir: Annotated[Path, typer.Argument(help="a run directory with results.json and predictions/")]) -> None:
    """Re-score a run from its saved predictions and print its tables."""
    from mcit_bench.rescore import rescore_run
    from mcit_bench.results import print_results

    try:
        results, changes = rescore_run(run_dir)
    except UserError as error:
        _fail(error)
    print_results(results, console)
    if changes:  # the stored numbers were not what the predictions give: say which, never silently
        errors.print(f"results.json did not match its predictions; {len(changes)} value"
                     f"{'s' * (len(changes) != 1)} rewritten:", highlight=False, markup=False)
        for change in changes:
            errors.print(f"  {change}", highlight=False, markup=False)


@app.command()
def submit(
    results: Annotated[list[Path], typer.Argument(help="results.json files or run directories")],
    leaderboard: Annotated[Path, typer.Option(help="leaderboard JSON to add to")] = DEFAULT_LEADERBOARD,
    replace: Annotated[bool, typer.Option(help="swap an entry of the same method, settings and seed for "
                                               "this run (a rerun after a fix)")] = False,
) -> None:
    """Verify finished runs and add them to a leaderboard; nothing is written unless every run passes."""
    from mcit_bench.leaderboard import submit_all

    try:
        entries = submit_all(results, leaderboard, replace)
    except UserError as error:
        _fail(error)
    for entry in entries:
        how = ("matrix re-scored from its predictions" if entry.verified else
               "results file alone: matrix not re-scored, submit the run directory to verify it")
        console.print(f"added {entry.key.label()} seed {entry.seed} to {leaderboard} ({how})", markup=False)


class BoardFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"
    html = "html"
    json = "json"


def shown_leaderboard_path() -> Path:
    """The repository's leaderboard when run from a checkout, else the copy installed with the package."""
    if DEFAULT_LEADERBOARD.is_file():
        return DEFAULT_LEADERBOARD
    from importlib.resources import files

    shipped = Path(str(files("mcit_bench.shipped_leaderboard").joinpath("leaderboard.json")))
    errors.print(f"showing the leaderboard shipped with mcit-bench ({shipped}); --leaderboard PATH shows another",
                 highlight=False, markup=False)
    return shipped


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
    import json

    from mcit_bench import report
    from mcit_bench.core.io import atomic_write_text
    from mcit_bench.leaderboard import aggregate, board_summary, read_leaderboard, results_entries

    try:
        if runs:
            entries = results_entries(runs)
        else:
            path = leaderboard or shown_leaderboard_path()
            if not path.is_file():
                raise ConfigError(f"leaderboard file {path} does not exist; pass --leaderboard PATH, or run "
                                  f"directories to aggregate")
            entries = read_leaderboard(path).entries
    except UserError as error:
        _fail(error)
    if sequence:
        entries = [e for e in entries if sequence in (e.key.sequence, e.key.sequence.split("@")[0])]
    rows = aggregate(entries)
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
        console.print(f"wrote {out} ({len(rows)} rows)")


@app.command()
def check(
    results: Annotated[Path, typer.Argument(help="results.json or run directory to check")],
    against: Annotated[Path, typer.Option(help="baseline results.json or run directory")],
    tolerance: Annotated[float, typer.Option(help="allowed drop in points (0-100 scale)", min=0)] = 1.0,
) -> None:
    """Exit non-zero when a summary metric or matrix cell is worse than the baseline by more than the tolerance."""
    from mcit_bench.check import changes_table, compare
    from mcit_bench.schema import load_results

    try:
        regressions, moved = compare(load_results(results), load_results(against), tolerance)
    except UserError as error:
        _fail(error)
    if moved:
        console.print(changes_table(moved, tolerance))
    if regressions:
        errors.print(f"[bold red]regression:[/] {len(regressions)} value(s) of {results} are worse than {against} "
                     f"by more than {tolerance:g}", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"ok: nothing in {results} is worse than {against} by more than {tolerance:g}")


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="run directories or results files (several: curves overlaid)")],
    out: Annotated[Optional[Path], typer.Option(help="folder for the PNGs (default: beside the first run)")] = None,
) -> None:
    """Write PNGs: each run's accuracy-matrix heatmap and the stage-wise accuracy curves of all runs."""
    from mcit_bench.plots import plot_runs
    from mcit_bench.schema import load_results

    try:
        written = plot_runs([(path, load_results(path)) for path in runs], out)
    except UserError as error:
        _fail(error)
    for path in written:
        console.print(f"wrote {path}")


@app.command(name="schema")
def export_schema(
    out: Annotated[Path, typer.Option(help="where to write the JSON Schema")] = Path("leaderboard/schema.json"),
) -> None:
    """Write the JSON Schema of results.json (the file the leaderboard accepts)."""
    import json

    from mcit_bench.core.io import atomic_write_text
    from mcit_bench.schema import json_schema

    atomic_write_text(out, json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    console.print(f"wrote {out}")


class Listing(str, Enum):
    methods = "methods"
    sequences = "sequences"
    metrics = "metrics"
    models = "models"


@app.command(name="ls")
def list_registered(what: Annotated[Listing, typer.Argument(help="what to list")]) -> None:
    """List what is registered: methods, sequences, metrics or models."""
    table = Table(title=what.value, title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    if what is Listing.methods:
        from mcit_bench.methods.registry import METHODS

        for name in METHODS.names():
            doc = (METHODS.get(name).__module__ and sys.modules[METHODS.get(name).__module__].__doc__) or ""
            table.add_row(name, doc.strip().splitlines()[0] if doc.strip() else "")
    elif what is Listing.sequences:
        from mcit_bench.data.stream import builtin_sequences, read_sequence

        for name, path in sorted(builtin_sequences().items()):
            definition = read_sequence(path)
            tasks = ", ".join(task.name for task in definition.tasks)
            source = "generated" if definition.source.kind == "synthetic" else "needs --data-root"
            variants = f"; variants: {', '.join(definition.variants)}" if definition.variants else ""
            table.add_row(f"{name}@{definition.version}",
                          f"{len(definition.tasks)} tasks ({source}{variants}): {tasks}")
    elif what is Listing.metrics:
        from mcit_bench.scoring.continual import CONTINUAL_METRICS
        from mcit_bench.scoring.task_metrics import METRICS

        for name in METRICS.names():
            table.add_row(name, f"task metric: {METRICS.get(name).description}")
        for name, metric in CONTINUAL_METRICS.items():
            table.add_row(name, f"continual metric: {(metric.__doc__ or '').strip().splitlines()[0]}")
    else:
        from mcit_bench.models.loading import MODELS

        for name in MODELS.names():
            table.add_row(name, MODELS.get(name).description)
        table.add_row("(any)", "a local folder or Hugging Face id loadable with AutoModelForImageTextToText")
    console.print(table)


data_app = typer.Typer(no_args_is_help=True, help="Inspect a stream's data.")
app.add_typer(data_app, name="data")


@data_app.command(name="check")
def data_check(
    sequence: Annotated[str, typer.Argument(help="sequence name or YAML file")],
    data_root: Annotated[Optional[Path], typer.Option(help="folder with the benchmark's files (generated streams: "
                                                           "the generated copy when left out)")] = None,
    subset: Annotated[Optional[str], typer.Option(help="a preset of the sequence")] = None,
    variant: Annotated[Optional[str], typer.Option(help="instruction variant of the sequence")] = None,
    images: Annotated[bool, typer.Option(help="open every image's header (slower on large folders)")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache for generated data")] = None,
) -> None:
    """Report per task what is present and what is missing or malformed, every problem at once.

    Exits with status 1 when anything is wrong. Nothing is downloaded: each task with a problem
    says where its parts are published.
    """
    from mcit_bench.data.audit import audit_stream
    from mcit_bench.data.stream import SyntheticSource, candidates, load_stream, locate_variant
    from mcit_bench.runner import default_cache_root, prepare_data_root
    from mcit_bench.scoring.task_metrics import check_metric_names

    try:
        stream = load_stream(sequence, subset, variant)
        check_metric_names(stream.tasks)
        if data_root is None and isinstance(stream.definition.source, SyntheticSource):
            data_root = prepare_data_root(stream, None, cache_dir or default_cache_root())
        if data_root is None or not data_root.is_dir():
            raise ConfigError(f"pass --data-root with the folder holding {stream.name}'s files "
                              f"({'not a folder: ' + str(data_root) if data_root else 'none given'})")
    except UserError as error:
        _fail(error)
    reports = audit_stream(stream, data_root, images)
    table = Table(title=f"{stream.name}@{stream.version}" + (f" ({stream.variant})" if stream.variant else "")
                  + f" under {data_root}", title_justify="left")
    for column in ("task", "like", "train", "test", "annotations", "status"):
        table.add_column(column)
    for report in reports:
        cells = {split.role: (f"{split.records:,} record{'s' * (split.records != 1)}"
                              + (f" ({split.text_only:,} text only)" if split.text_only else "")
                              if split.role != "annotations"
                              else "present")
                 if split.present else "absent (optional)" if split.role == "annotations"
                 and report.task.annotations.optional else "[red]missing[/]" for split in report.splits}
        table.add_row(report.task.name, report.task.like or "", cells["train"], cells["test"],
                      cells.get("annotations", "–"), "[green]ok[/]" if report.ok else f"[red]{len(report.problems)} "
                      f"problem{'s' * (len(report.problems) != 1)}[/]")
    console.print(table)
    folder = locate_variant(stream, data_root)
    if folder is not None:
        console.print(f"instructions ({stream.variant}): {folder} (one of "
                      f"{', '.join(candidates(stream.definition.variants[stream.variant]))})", highlight=False,
                      soft_wrap=True, markup=False)
    for report in reports:
        console.print(f"\n{report.task.name}", style="bold", highlight=False, markup=False)
        for note in report.notes:
            console.print(f"  {note}", highlight=False, soft_wrap=True, markup=False)
        for problem in report.problems:
            console.print(f"  - {problem}", highlight=False, soft_wrap=True, markup=False)
        if not report.ok:
            for part, where in report.task.published.items():
                console.print(f"  {part} are published at {where}", highlight=False, soft_wrap=True, markup=False)
    if any(not report.ok for report in reports):
        raise typer.Exit(code=1)


@app.command(name="pretrain-tiny")
def pretrain_tiny(
    out: Annotated[Path, typer.Option(help="folder to write the model to")],
    steps: Annotated[int, typer.Option(help="pre-training steps")] = 4000,  # PretrainConfig.steps: the shipped weights
    seed: Annotated[int, typer.Option(help="seed for initialisation and data")] = 0,
) -> None:
    """Pre-train mcit-tiny from scratch on the description mix (how the packaged weights were made)."""
    from mcit_bench.models.pretrain import PretrainConfig, pretrain

    record = pretrain(PretrainConfig(seed=seed, steps=steps), out)
    console.print(f"saved {out} (final loss {record['final_loss']:.4f}, {record['seconds']:.0f} s)")


def main() -> None:
    # A write the file system refuses deep inside a library (a checkpoint, the arrow cache) is the
    # user's to fix (a full disk, a read-only folder): one sentence, not a traceback.
    try:
        app()
    except OSError as error:
        refused = storage_error(error)
        if refused is None:
            raise
        _print_error(refused)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
