"""The ``mcit-bench`` command line: parses, calls library functions, prints with rich."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mcit_bench.errors import ConfigError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal continual instruction tuning: run methods on task streams, score them.")
console = Console(stderr=False)
errors = Console(stderr=True, soft_wrap=True)  # one sentence per error, never broken inside a path


def _fail(error: UserError) -> None:
    errors.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(code=2)


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
    method: Annotated[str, typer.Option(help="method to run (see 'mcit-bench ls methods')")] = "seqft",
    sequence: Annotated[str, typer.Option(help="task sequence name or YAML file")] = "synth-coin",
    subset: Annotated[Optional[str], typer.Option(help="a preset of the sequence, e.g. 'ci' (small, fast)")] = None,
    model: Annotated[str, typer.Option(help="registered model, local folder or Hugging Face id")] = "mcit-tiny",
    seed: Annotated[int, typer.Option(help="training seed (data order, initialisation)")] = 0,
    data_root: Annotated[Optional[Path], typer.Option(help="folder with a real benchmark's files")] = None,
    output: Annotated[Path, typer.Option(help="root of run directories")] = Path("runs"),
    run_id: Annotated[Optional[str], typer.Option(help="name of the run directory (default seed<N>[-subset])")] = None,
    resume: Annotated[bool, typer.Option(help="continue an unfinished run after its last finished stage")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    full: Annotated[bool, typer.Option(help="seqft/joint: train all language-model weights instead of LoRA")] = False,
    option: Annotated[list[str], typer.Option(help="method option name=value (repeatable)")] = [],
    steps_per_task: Annotated[Optional[int], typer.Option(help="training steps per task (default: the stream's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="training batch size")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of run settings (flags override it)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache for generated data and arrow files")] = None,
) -> None:
    """Train a method on a task stream, evaluating every task after every stage."""
    from mcit_bench.config import load_config_file, parse_run_config
    from mcit_bench.results import print_results
    from mcit_bench.runner import run_stream

    try:
        raw: dict[str, Any] = load_config_file(config) if config else {}
        raw.update({"method": method, "sequence": sequence, "subset": subset, "model": model, "seed": seed})
        method_options = dict(raw.get("method_options", {}))
        method_options.update(_parse_options(option))
        if full:
            method_options["full"] = True
        raw["method_options"] = method_options
        training = dict(raw.get("training", {}))
        for key, value in (("steps_per_task", steps_per_task), ("batch_size", batch_size), ("lr", lr)):
            if value is not None:
                training[key] = value
        raw["training"] = training
        run_config = parse_run_config(raw, str(config) if config else "command line")
        results = run_stream(run_config, output, run_id, data_root, cache_dir, resume, overwrite, console)
    except UserError as error:
        _fail(error)
    print_results(results, console)
    console.print(f"results: {Path(results['run']['run_dir']) / 'results.json'}")


@app.command()
def score(run_dir: Annotated[Path, typer.Argument(help="a run directory with results.json and predictions/")]) -> None:
    """Re-score a run from its saved predictions and print its tables."""
    from mcit_bench.results import print_results
    from mcit_bench.scoring.rescore import rescore_run

    try:
        results = rescore_run(run_dir)
    except UserError as error:
        _fail(error)
    print_results(results, console)


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
        from mcit_bench.methods.base import METHODS

        for name in METHODS.names():
            doc = (METHODS.get(name).__module__ and sys.modules[METHODS.get(name).__module__].__doc__) or ""
            table.add_row(name, doc.strip().splitlines()[0] if doc.strip() else "")
    elif what is Listing.sequences:
        from mcit_bench.data.stream import builtin_sequences, read_sequence

        for name, path in sorted(builtin_sequences().items()):
            definition = read_sequence(path)
            tasks = ", ".join(task.name for task in definition.tasks)
            table.add_row(f"{name}@{definition.version}", f"{len(definition.tasks)} tasks: {tasks}")
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


@app.command(name="pretrain-tiny")
def pretrain_tiny(
    out: Annotated[Path, typer.Option(help="folder to write the model to")],
    steps: Annotated[int, typer.Option(help="pre-training steps")] = 3000,
    seed: Annotated[int, typer.Option(help="seed for initialisation and data")] = 0,
) -> None:
    """Pre-train mcit-tiny from scratch on the description mix (how the packaged weights were made)."""
    from mcit_bench.models.pretrain import PretrainConfig, pretrain

    record = pretrain(PretrainConfig(seed=seed, steps=steps), out)
    console.print(f"saved {out} (final loss {record['final_loss']:.4f}, {record['seconds']:.0f} s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
