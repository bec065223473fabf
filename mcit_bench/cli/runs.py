"""The commands that train and score: ``run``, ``tune`` and ``score``."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcit_bench.cli import options as opt
from mcit_bench.cli.app import app, console, errors, fail
from mcit_bench.core.errors import ConfigError, UserError


@app.command(context_settings=opt.TAKES_METHOD_FLAGS)
def run(
    ctx: typer.Context,
    method: opt.MethodName = None,
    sequence: opt.Sequence = None,
    subset: opt.Subset = None,
    variant: opt.Variant = None,
    model: opt.Model = None,
    seed: opt.Seed = None,
    seeds: Annotated[Optional[str], typer.Option(help="several seeds, e.g. 0,1,2: one run each, then mean, std "
                                                      "and 95% CI")] = None,
    data_root: opt.DataRoot = None,
    output: opt.Output = Path("runs"),
    run_id: Annotated[Optional[str], typer.Option(help="name of the run directory (default "
                                                       "seed<N>[-subset][-variant][-validation])")] = None,
    resume: Annotated[bool, typer.Option(help="continue an unfinished run after its last finished stage")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    option: opt.MethodOption = [],
    steps_per_task: opt.StepsPerTask = None,
    batch_size: opt.BatchSize = None,
    grad_accum: opt.GradAccum = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate")] = None,
    precision: opt.Precision = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="recompute activations in backward (less "
                                                              "memory)")] = False,
    max_length: Annotated[Optional[int], typer.Option(help="tokens of a training sequence, image placeholders "
                                                           "included (default: the model's limit)")] = None,
    shard: Annotated[Optional[str], typer.Option(help="fsdp: shard the frozen base model over the processes "
                                                      "(FSDP2; launch with torchrun, docs/DISTRIBUTED.md)")] = None,
    config: opt.ConfigFile = None,
    cache_dir: opt.CacheDir = None,
    guide_encoder: opt.GuideEncoder = None,
    tuned: Annotated[Optional[Path], typer.Option(help="tuning.json of 'mcit-bench tune': train with the settings "
                                                       "its study chose")] = None,
) -> None:
    """Train a method on a task stream, evaluating every task after every stage."""
    from mcit_bench.api import run_config as run_one
    from mcit_bench.config import parse_run_config
    from mcit_bench.results.show import print_results
    from mcit_bench.rundir import RunPaths

    finished: list[Path] = []
    try:
        raw = opt.raw_config(opt.RunSettings(
            config, method, sequence, subset, variant, model, option, precision,
            {"steps_per_task": steps_per_task, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
             "gradient_checkpointing": gradient_checkpointing or None, "max_length": max_length}, ctx.args,
            guide_encoder))
        seed_list = parse_seeds(seeds) if seeds else [seed if seed is not None else raw.get("seed", 0)]
        if len(seed_list) > 1 and run_id:
            raise ConfigError("--run-id names one run; leave it out with --seeds (the runs are named seed<N>)")
        if shard is not None:
            raw["shard"] = shard
        source = str(config) if config else "command line"
        # under accelerate launch / torchrun only the first process prints
        shown = console if os.environ.get("RANK", "0") == "0" else Console(quiet=True)
        if tuned is not None:
            from mcit_bench.tune import read_tuning, tuned_config

            tuning = read_tuning(tuned)
        for one_seed in seed_list:
            run_config = (tuned_config({**raw, "seed": one_seed}, tuning, tuned, source) if tuned is not None
                          else parse_run_config({**raw, "seed": one_seed}, source))
            results = run_one(run_config, output, run_id, data_root, cache_dir, resume, overwrite, shown)
            print_results(results.model_dump(mode="json"), shown)
            finished.append(RunPaths(Path(results.run.run_dir)).results)
            shown.print(f"results: {finished[-1]}")
        if len(finished) > 1:
            from mcit_bench.board import report
            from mcit_bench.board.stats import aggregate, results_entries

            shown.print(report.rich_table(aggregate(results_entries(finished))))
    except UserError as error:
        fail(error)


class Protocol(str, Enum):
    equal_budget = "equal-budget"
    plasticity = "plasticity"


@app.command(context_settings=opt.TAKES_METHOD_FLAGS)
def tune(
    ctx: typer.Context,
    method: Annotated[str, typer.Option(help="method to tune (see 'mcit-bench ls methods')")],
    trials: Annotated[Optional[int], typer.Option(help="the study's budget: trials in all, the same for every "
                                                        "method (the equal-budget protocol)")] = None,
    protocol: Annotated[Protocol, typer.Option(help="equal-budget: a search of whole runs; plasticity: De Lange "
                                                    "et al.'s task-by-task decay of the stability setting")]
    = Protocol.equal_budget,
    margin: Annotated[float, typer.Option(help="plasticity: a task is accepted at (1 - margin) of fine-tuning's "
                                               "accuracy")] = 0.2,
    decay: Annotated[float, typer.Option(help="plasticity: the stability setting's factor from one try to the "
                                              "next")] = 0.5,
    sequence: opt.Sequence = None,
    subset: opt.Subset = None,
    variant: opt.Variant = None,
    model: opt.Model = None,
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
    data_root: opt.DataRoot = None,
    output: opt.Output = Path("runs"),
    option: opt.MethodOption = [],
    steps_per_task: opt.StepsPerTask = None,
    batch_size: opt.BatchSize = None,
    grad_accum: opt.GradAccum = None,
    precision: opt.Precision = None,
    config: opt.ConfigFile = None,
    cache_dir: opt.CacheDir = None,
    guide_encoder: opt.GuideEncoder = None,
) -> None:
    """Choose a method's hyper-parameters on a validation split carved from the training data.

    --protocol equal-budget (the default): an Optuna study of --trials whole runs; the same command
    resumes a stopped study or joins a running one, and a trial whose worker died is marked failed and
    run again. --protocol plasticity: De Lange et al.'s task-by-task decay of the method's stability
    setting until each new task reaches (1 - --margin) of fine-tuning's accuracy.
    """
    from mcit_bench.config import RunConfig, parse_run_config
    from mcit_bench.tune import TuneRequest, method_space, read_space_file
    from mcit_bench.tune import tune as run_study

    try:
        raw = opt.raw_config(opt.RunSettings(
            config, method, sequence, subset, variant, model, option, precision,
            {"steps_per_task": steps_per_task, "batch_size": batch_size, "grad_accum": grad_accum}, ctx.args,
            guide_encoder))
        if seed is not None:
            raw["seed"] = seed
        raw["validation"] = {"fraction": validation_fraction, "max_per_task": validation_max}
        base = parse_run_config(raw, str(config) if config else "command line")
        suffix = f"-seed{base.seed}" + (f"-{base.subset}" if base.subset else "")
        if protocol is Protocol.plasticity:
            from mcit_bench.tune import PlasticityRequest, plasticity_protocol

            show_plasticity(plasticity_protocol(PlasticityRequest(
                base=base, output_root=output, name=study_name or f"plasticity{suffix}", margin=margin, decay=decay,
                data_root=data_root, cache_root=cache_dir), console))
            return
        if trials is None:
            raise ConfigError("--trials is missing: the equal-budget study needs its budget (8 for the "
                              "leaderboard's methods)")
        request = TuneRequest(base=base, trials=trials,
                              space=read_space_file(space) if space else method_space(method),
                              output_root=output, study_name=study_name or f"tune{suffix}", storage=storage,
                              data_root=data_root,
                              cache_root=cache_dir)
        summary = run_study(request, console)
    except UserError as error:
        fail(error)
    table = Table(title=f"{method}: {summary['study']} (final accuracy on the validation split)")
    for column in ("trial", "state", "value", "params"):
        table.add_column(column)
    for trial in summary["trials"]:
        value = "" if trial["value"] is None else f"{trial['value']:.2f}"
        state = (f"pruned after stage {trial['stopped_after_stage']}" if trial["stopped_after_stage"] is not None
                 else trial["state"])
        table.add_row(str(trial["number"]), state, value, Text(shown_params(trial["params"])))
    console.print(table)
    best = summary["best"]
    console.print(f"best: trial {best['number']} ({best['value']:.2f}) with {shown_params(best['params'])} "
                  f"(exact values in tuning.json)", markup=False)
    identity = summary["identity"]
    named = "".join(f" --{key} {identity[key]}" for key in ("sequence", "subset", "variant", "model")
                    if identity[key] != RunConfig.model_fields[key].default)  # a run must name what the study did
    console.print(f"train with it: mcit-bench run --method {method}{named} --tuned "
                  f"{summary['folder']}/tuning.json", markup=False)


def shown_params(params: dict) -> str:
    """A trial's settings for the eye: floats to four significant digits (tuning.json keeps them exact)."""
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in sorted(params.items()))


def show_plasticity(summary: dict) -> None:
    """Each stage's reference, the settings tried and the one accepted, then how to train with them."""
    table = Table(title=f"{summary['method']}: the plasticity protocol on the validation split "
                        f"(accept at {1 - summary['margin']:g} of fine-tuning's accuracy)")
    for column in ("stage", "task", "fine-tuning", "tried", f"chosen {summary['option']}", "accuracy"):
        table.add_column(column)
    for stage in summary["stages"]:
        tried = ", ".join(f"{t['value']:g}: {t['accuracy']:.1f}" for t in stage["tries"])
        table.add_row(str(stage["stage"]), Text(stage["task"]), f"{stage['reference']:.1f}", tried,
                      f"{stage['chosen']:g}", f"{stage['accuracy']:.1f}")
    console.print(table)
    console.print(f"train with it: mcit-bench run --config {summary['folder']}/run_config.json", markup=False)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be integers separated by commas, for example 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} must name at least one seed, each once")
    return seeds


@app.command()
def score(run_dir: Annotated[Path, typer.Argument(help="a run directory with results.json and predictions/")]) -> None:
    """Re-score a run from its saved predictions and print its tables."""
    from mcit_bench.results.scoring import rescore_run
    from mcit_bench.results.show import print_results

    try:
        results, changes = rescore_run(run_dir)
    except UserError as error:
        fail(error)
    print_results(results, console)
    if changes:  # the stored numbers were not what the predictions give: say which, never silently
        errors.print(f"results.json did not match its predictions; {len(changes)} value"
                     f"{'s' * (len(changes) != 1)} rewritten:", highlight=False, markup=False)
        for change in changes:
            errors.print(f"  {change}", highlight=False, markup=False)
