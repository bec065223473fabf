"""A run, phase by phase: :meth:`Run.setup` (stream, data, model, method, the run directory claimed),
:meth:`Run.resume` (the verified progress and the last checkpoint), :meth:`Run.stage` (train,
checkpoint, answer, score) for each stage, and :meth:`Run.finish` (the results document, scored
from the saved predictions by ``results/scoring.py`` and validated when written).

What the run directory holds and how it is claimed, verified and written is ``mcit_bench.rundir``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mcit_bench import __version__
from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError
from mcit_bench.core.io import atomic_write_json, weights_fingerprint
from mcit_bench.core.lock import environment_record
from mcit_bench.data.prepare import default_cache_root, prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import TaskStream, load_stream
from mcit_bench.engine.checkpoint import load_checkpoint, save_checkpoint
from mcit_bench.engine.environment import (
    device_description,
    git_state,
    package_versions,
    peak_memory_mb,
    rank_memory,
    reset_peak_memory,
)
from mcit_bench.engine.generate import Answered, answer_every_task
from mcit_bench.methods.base import RunContext, Stage
from mcit_bench.methods.registry import build_method, stage_method_options
from mcit_bench.models.loading import PRECISIONS, resolve_model_path
from mcit_bench.results.document import SCHEMA_VERSION
from mcit_bench.results.scoring import score_run, stage_scores, write_results
from mcit_bench.rundir import (
    RunPaths,
    claim_run_directory,
    remove_leftovers,
    run_directory,
    stage_digests,
    verified_progress,
)
from mcit_bench.scoring.task_metrics import METRICS, check_metric_names

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as ProgressBar

    from mcit_bench.models.guide import GuideEncoder

AfterStage = Callable[[int, dict[int, dict[str, float]]], None]


@dataclass
class Progress:
    """What ``progress.json`` records after each finished stage: the matrix rows so far, the stage
    log, the names of every weight trained, the sha256 of every file each stage wrote (a resume
    verifies them), and the wall time spent before a resume."""

    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    trained: set[str] = field(default_factory=set)
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls({int(row): scores for row, scores in data.get("rows", {}).items()}, data.get("stages", []),
                   set(data.get("trained", [])), data.get("digests", {}), float(data.get("wall_seconds", 0.0)))

    def as_json(self, wall_seconds: float) -> dict[str, Any]:
        return {"rows": {str(row): scores for row, scores in self.rows.items()}, "stages": self.stages,
                "trained": sorted(self.trained), "digests": self.digests, "wall_seconds": wall_seconds}


def sequence_reference(stream: TaskStream) -> dict[str, Any]:
    """The stream's identity as results.json records it (``variant`` only for sequences that have one)."""
    reference: dict[str, Any] = {"name": stream.name, "version": stream.version, "subset": stream.subset,
                                 "content_hash": stream.content_hash(), "tasks": stream.task_names}
    if stream.variant is not None:
        reference["variant"] = stream.variant
    return reference


class Run:
    """One run of a config over its stream; every process of a launch holds one."""

    def __init__(self, config: RunConfig, output_root: Path, run_id: str | None, data_root: Path | None,
                 cache_root: Path | None, console: Console | None) -> None:
        self.started = time.perf_counter()
        self.checkout = git_state()  # the checkout whose code this process imported, not whatever it holds later
        self.config = config
        self.cache_root = cache_root or default_cache_root()
        self.stream = load_stream(config.sequence, config.subset, config.variant)
        check_metric_names(self.stream.tasks)
        for task in self.stream.tasks:  # a metric that cannot run fails now, not after hours of training
            METRICS.get(task.metric_name).preflight()
        self.method = build_method(config)
        if config.guide_encoder is not None and not self.method.capabilities.needs_guide:
            raise ConfigError(f"method {config.method!r} reads no guide encoder; leave out --guide-encoder "
                              f"(guide_encoder: in a config)")
        self.stages = self.method.stages(self.stream)
        stages = len(self.stages)
        beyond = sorted(stage for stage in config.stage_options or {} if stage > stages)
        if beyond:
            raise ConfigError(f"stage_options names stage {beyond[0]} and method {config.method!r} trains "
                              f"{stages} stage{'s' * (stages != 1)} on this stream; name stages 1 to {stages}")
        self.paths = RunPaths(run_directory(output_root, self.stream, config, run_id))
        self.data_root = data_root
        self.console = console
        self.progress = Progress()

    # ------------------------------------------------------------------------------------ setup

    def setup(self, resume: bool, overwrite: bool) -> None:
        """Data, collator, processes, the claimed run directory, the model with the method set up
        (and sharded); everything a config can get wrong is refused before the directory is written."""
        from accelerate import Accelerator, DistributedDataParallelKwargs

        from mcit_bench.models.blank_image import install_blank_image
        from mcit_bench.models.collate import InstructionCollator
        from mcit_bench.models.loading import (
            load_named_processor,
            load_weights,
            model_config,
            sequence_limit,
            unreadable_tasks,
        )

        config, stream = self.config, self.stream
        architecture = model_config(config.model)
        root = prepare_data_root(stream, self.data_root, self.cache_root)
        self.train_sets, self.test_sets = load_stream_data(stream, root, self.cache_root, config.validation)
        processor = load_named_processor(config.model)
        self.collator = InstructionCollator(processor, config.training.max_length
                                            or sequence_limit(config.model, architecture, processor.tokenizer))
        for task, train_set in self.train_sets.items():  # a sample that cannot fit fails before the directory
            self.collator.check_fits(task, train_set)
        # DDP must not broadcast rank 0's buffers into every process before each forward: what a method
        # counts in a buffer on its share of the batch (BranchLoRA's branch usage) is summed over the
        # processes by the method, and the model's own buffers (position tables) are the same everywhere
        self.accelerator = accelerator = Accelerator(
            cpu=not torch.cuda.is_available(), kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
        self.main = accelerator.is_main_process
        guide = self.load_guide(accelerator.device)  # a guide that cannot load fails before the directory
        if config.shard == "fsdp":
            from mcit_bench.engine.sharding import check_can_shard

            check_can_shard(config.method, self.method.capabilities.can_shard, accelerator.num_processes,
                            self.method.options.trains_base_weights())
        # several processes (accelerate launch, torchrun): each checks the directory, the main one claims it
        self.saved_progress = claim_run_directory(self.paths, config, resume, overwrite, write=False)
        accelerator.wait_for_everyone()
        if self.main:
            claim_run_directory(self.paths, config, resume, overwrite)
        accelerator.wait_for_everyone()
        if not self.main:
            self.console = None
        torch.manual_seed(config.seed)
        model = load_weights(config.model, PRECISIONS[config.precision], accelerator.device)
        if self.console is not None:
            for warning in unreadable_tasks(processor.tokenizer, self.train_sets):
                self.say(warning, style="yellow")
        self.base_ids = {id(p) for p in model.parameters()}  # adapters may rename base weights, never replace them
        self.context = RunContext(stream=stream, seed=config.seed, train_data=self.train_sets,
                                  device=accelerator.device, collator=self.collator, guide=guide)
        model = self.method.setup(model, self.context).to(accelerator.device)
        if config.shard == "fsdp":
            from mcit_bench.engine.sharding import shard_model

            # what the method added or trains stays replicated; the loaded base is sharded
            keep = {p for p in model.parameters() if id(p) not in self.base_ids or p.requires_grad}
            model = shard_model(model, accelerator, config.precision, keep)
            reset_peak_memory()
        # after sharding, so a sharded embedding layer's own hooks never see the blank image's zero
        install_blank_image(model, self.collator.blank_image(), accelerator.device)  # every process runs vision
        self.model = model

    def load_guide(self, device: torch.device) -> GuideEncoder | None:
        """The frozen CLIP of a method that reads one: the config's, else the embedded mcit-tiny-guide,
        which knows generated streams only."""
        if not self.method.capabilities.needs_guide:
            return None
        from mcit_bench.data.stream import SyntheticSource
        from mcit_bench.models.guide import TINY_GUIDE, GuideEncoder

        name = self.config.guide_encoder
        if name is None:
            if not isinstance(self.stream.definition.source, SyntheticSource):
                raise ConfigError(f"method {self.config.method!r} reads a guide encoder and {self.stream.name!r} is a "
                                  f"published stream: pass --guide-encoder with a CLIP (the official code uses "
                                  f"openai/clip-vit-large-patch14-336); {TINY_GUIDE} knows generated streams only")
            name = TINY_GUIDE
        return GuideEncoder(name, device)

    def say(self, message: str, style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(message, style=style, highlight=False, markup=False)

    # ----------------------------------------------------------------------------------- resume

    def resume(self) -> None:
        """Take up a claimed directory's verified progress and its last checkpoint; evaluate the base
        model when no stage has been."""
        if self.saved_progress:
            self.progress = Progress.from_json(verified_progress(self.paths, self.saved_progress, self.say))
        if self.main and self.paths.root.exists():
            remove_leftovers(self.paths)
        done = len(self.progress.stages)
        if done:
            self.progress.trained |= load_checkpoint(self.paths.checkpoint(done), self.model, self.method)
            self.say(f"resuming {self.paths.root} after stage {done} of {len(self.stages)}")
        if 0 not in self.progress.rows:
            self.progress.rows[0] = self.evaluate(0)[0]
            self.save_progress(0)

    def remaining(self) -> list[Stage]:
        return self.stages[len(self.progress.stages):]

    # ------------------------------------------------------------------------------------ stage

    def evaluate(self, stage: int) -> tuple[dict[str, float], Answered]:
        """Every task answered after ``stage`` and scored from the saved predictions (on the main
        process; the others return no scores), and what the answering reports besides."""
        answered = answer_every_task(self.accelerator, self.model, self.collator, self.config, self.method,
                                     self.context, self.test_sets, self.paths, stage)
        if not self.main:
            return {}, answered
        metrics = {task.name: task.metric_name for task in self.stream.tasks}
        return stage_scores(self.paths.root, stage, metrics), answered

    def stage(self, stage: Stage, bar: ProgressBar) -> dict[str, float]:
        """Train one stage, checkpoint it, answer and score every task; returns its scores."""
        from mcit_bench.engine.train import stage_seed, train_stage

        config, progress = self.config, self.progress
        torch.manual_seed(stage_seed(config.seed, stage.index))
        self.method.options = stage_method_options(config, stage.index)  # the run's, unless this stage has its own
        self.method.before_task(stage, self.context)
        progress.trained |= {name for name, p in self.model.named_parameters() if p.requires_grad}
        cut_before = self.collator.cut_samples
        stats = train_stage(self.model, self.method, stage, self.context, self.collator, config.training,
                            self.stream.task_steps(), self.accelerator, bar, config.precision,
                            sharded=config.shard is not None)
        if self.collator.cut_samples > cut_before:
            self.say(f"warning: {self.collator.cut_samples - cut_before} training samples of stage {stage.index} "
                     f"were longer than {self.collator.max_length} tokens and lost the end of their answer "
                     f"(--max-length raises the limit)", style="yellow")
        self.method.after_task(stage, self.context)
        if self.main:
            save_checkpoint(self.paths, stage.index, self.model, progress.trained, self.method)
        scores, answered = self.evaluate(stage.index)
        for _ in stage.tasks:  # a stage that trains several tasks (joint) fills one row per task
            progress.rows[len(progress.rows)] = scores
        progress.stages.append({"stage": stage.index, "tasks": [t.name for t in stage.tasks], "steps": stats.steps,
                                "train_seconds": round(stats.seconds, 2), "final_loss": round(stats.final_loss, 5),
                                "trainable_params": stats.trainable_params, "task_selection": answered.selection,
                                "oracle_seconds": round(answered.oracle_seconds, 2)})
        self.save_progress(stage.index)
        shown = " ".join(f"{task}={score:.0f}" for task, score in scores.items())
        self.say(f"stage {stage.index} ({stage.name}) done in {stats.seconds:.0f} s: {shown}")
        return scores

    def wall_seconds(self) -> float:
        return self.progress.wall_seconds + time.perf_counter() - self.started

    def save_progress(self, stage: int) -> None:
        """After ``stage`` finished: its rows, and the sha256 of every file it wrote, for a verified resume."""
        if not self.main:
            return
        self.progress.digests[str(stage)] = stage_digests(self.paths, stage)
        atomic_write_json(self.paths.progress, self.progress.as_json(self.wall_seconds()))

    # ----------------------------------------------------------------------------------- finish

    def finish(self) -> dict[str, Any]:
        """The results document: identity, cost, and every matrix scored from the saved predictions;
        written (validated) by the main process and handed to every process."""
        per_rank = rank_memory(self.model, self.accelerator)  # a collective: every process takes part
        results = None
        if self.main:
            results = self.results_document(per_rank)
            write_results(results, self.paths.results)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            results = broadcast_object_list([results])[0]
        self.accelerator.wait_for_everyone()
        return results

    def results_document(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        config, stream, method, stages = self.config, self.stream, self.method, self.progress.stages
        task_info = {task.name: {"type": task.type, "metric": task.metric_name, "like": task.like,
                                 "test_samples": len(self.test_sets[task.name])} for task in stream.tasks}
        published = {task.name: task.as_published.metric for task in stream.tasks if task.as_published is not None}
        scored = score_run(self.paths.root, task_info, stages, published or None)
        parameters = list(self.model.parameters())
        return {
            "schema_version": SCHEMA_VERSION,
            "run": {
                "method": config.method,
                "method_options": method.options.model_dump(mode="json"),
                "config": config.as_json(),
                "sequence": sequence_reference(stream),
                "model": config.model,
                "model_weights": weights_fingerprint(Path(resolve_model_path(config.model))),
                "seed": config.seed,
                "harness_version": __version__,
                "git": self.checkout,
                "packages": package_versions(),
                "environment": environment_record(),
                "guide": self.context.guide.record() if self.context.guide is not None else None,
                "device": device_description(),
                "upper_bound": method.capabilities.upper_bound,
                "task_id_at_eval": method.capabilities.task_id_at_eval,
                "run_dir": str(self.paths.root),
            },
            "tasks": stream.task_names,
            "task_info": task_info,
            **scored,
            "stages": stages,
            "cost": {
                "trainable_params_per_stage": [entry["trainable_params"] for entry in stages],
                "added_params": sum(p.numel() for p in parameters if id(p) not in self.base_ids),
                "total_params": sum(p.numel() for p in parameters),
                "train_seconds": round(sum(entry["train_seconds"] for entry in stages), 2),
                "wall_seconds": round(self.wall_seconds(), 2),
                "oracle_seconds": round(sum(entry.get("oracle_seconds", 0.0) for entry in stages), 2),
                "peak_memory_mb": round(peak_memory_mb(), 1),
                "per_rank": per_rank,
            },
        }


def run_stream(config: RunConfig, output_root: Path = Path("runs"), run_id: str | None = None,
               data_root: Path | None = None, cache_root: Path | None = None, resume: bool = False,
               overwrite: bool = False, console: Console | None = None, stop_after_stage: int | None = None,
               after_stage: AfterStage | None = None) -> dict[str, Any] | None:
    """Run ``config`` to the end and return its results document; None when ``stop_after_stage``
    stopped it first (``--resume`` goes on from there).

    ``after_stage(stage, rows)`` sees, on the main process, the matrix rows measured so far after
    every finished stage (a tuning study reports them to its pruner, which may stop the run by raising).
    """
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.progress import Progress as ProgressBar

    run = Run(config, output_root, run_id, data_root, cache_root, console)
    run.setup(resume, overwrite)
    run.resume()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),  # no loss before step 1
               TimeRemainingColumn())
    with ProgressBar(*columns, console=run.console, disable=run.console is None, transient=True) as bar:
        for stage in run.remaining():
            if stop_after_stage is not None and stage.index > stop_after_stage:
                return None
            run.stage(stage, bar)
            if after_stage is not None and run.main:
                after_stage(stage.index, run.progress.rows)
    return run.finish()
