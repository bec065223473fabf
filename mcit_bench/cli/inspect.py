"""The commands that look around: ``ls`` (what is registered), ``data check`` (a stream's files) and
``pretrain-tiny`` (how the packaged model was made)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mcit_bench.cli.app import app, console, fail
from mcit_bench.core.errors import ConfigError, UserError


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

        table.add_column("capabilities")
        for name in METHODS.names():
            method = METHODS.get(name)
            doc = (method.__module__ and sys.modules[method.__module__].__doc__) or ""
            flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in method.Options.flags)
            table.add_row(name, (doc.strip().splitlines()[0] if doc.strip() else "")
                          + (f" (flags: {flags})" if flags else ""), method.capabilities.summary())
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
    from mcit_bench.data.prepare import default_cache_root, prepare_data_root
    from mcit_bench.data.stream import SyntheticSource, candidates, load_stream, locate_variant
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
        fail(error)
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
        for note in report.notes + absent_published_cells(report):
            console.print(f"  {note}", highlight=False, soft_wrap=True, markup=False)
        for problem in report.problems:
            console.print(f"  - {problem}", highlight=False, soft_wrap=True, markup=False)
        if not report.ok:
            for part, where in report.task.published.items():
                console.print(f"  {part} are published at {where}", highlight=False, soft_wrap=True, markup=False)
    if any(not report.ok for report in reports):
        raise typer.Exit(code=1)


def absent_published_cells(report) -> list[str]:
    """A warning for a task whose as-published cells will be absent with the files present, and why."""
    from mcit_bench.scoring.published import PUBLISHED_METRICS

    task = report.task
    if task.as_published is None:
        return []
    metric = PUBLISHED_METRICS.get(task.as_published.metric)
    if metric.always_absent is not None:
        return [f"warning: as published, absent: {metric.always_absent}"]
    if task.annotations is None:
        return []
    reason = metric.absent_without_references
    answer_file = next(split for split in report.splits if split.role == "annotations")
    return [] if reason is None or answer_file.present else [f"warning: as published, absent: {reason}"]


@app.command(name="pretrain-guide")
def pretrain_guide_command(
    out: Annotated[Path, typer.Option(help="folder to write the guide encoder to")],
    steps: Annotated[int, typer.Option(help="pre-training steps", min=1)] = 800,  # the shipped weights'
    seed: Annotated[int, typer.Option(help="seed for initialisation and data", min=0, max=2**32 - 1)] = 0,
) -> None:
    """Pre-train the tiny CLIP guidance encoder contrastively on synth-coin's images and instructions (how
    the packaged mcit-tiny-guide was made)."""
    from mcit_bench.models.guide import GuidePretrainConfig, pretrain_guide

    record = pretrain_guide(GuidePretrainConfig(seed=seed, steps=steps), out)
    console.print(f"saved {out} (final loss {record['final_loss']:.4f}, {record['seconds']:.0f} s)", markup=False)


@app.command(name="env")
def environment(
    lock: Annotated[Optional[Path], typer.Option(help="a lock file (default: the one this mcit-bench ships)")] = None,
    pyproject: Annotated[Optional[Path], typer.Option(help="check that the lock pins every requirement of this "
                                                           "pyproject.toml within its range")] = None,
) -> None:
    """Say whether this environment is the reference lock's (what a run records), and check a lock
    against pyproject.toml's ranges."""
    from mcit_bench.core.lock import (
        environment_record,
        lock_digest,
        lock_pins,
        lock_problems,
        pyproject_requirements,
        read_lock_file,
        shipped_lock_text,
    )

    try:
        text = read_lock_file(lock) if lock is not None else shipped_lock_text()
        if text is None:
            raise ConfigError("this mcit-bench ships no lock; pass --lock FILE")
        if pyproject is not None:
            problems = lock_problems(pyproject_requirements(pyproject), text)
            if problems:
                raise ConfigError(f"lock {lock or 'shipped'} does not satisfy {pyproject}: {'; '.join(problems)}; "
                                  f"rewrite it with 'bash .ci/lock'")
    except UserError as error:
        fail(error)
    record = environment_record(text)
    if pyproject is not None:
        console.print(f"the lock pins every requirement of {pyproject} within its range", markup=False)
    if record["lock"] is not None:
        console.print(f"this environment is the reference lock {record['lock']} ({len(lock_pins(text))} packages "
                      f"at their pins); runs record it", markup=False, highlight=False)
    else:
        console.print(f"this environment is not the reference lock {lock_digest(text)}: "
                      f"{'; '.join(record['differs'])}", markup=False, highlight=False)


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
