"""A whole run: data, model, method, stages, evaluation after each stage, checkpoints, resume, results.

What the run directory holds and how it is claimed, verified and written is mcit_bench.rundir's.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mcit_bench import __version__
from mcit_bench.config import RunConfig, ValidationSplit
from mcit_bench.core.errors import ConfigError, DataError, first_problem
from mcit_bench.core.io import atomic_write_json
from mcit_bench.data.formats import load_split, row_to_record
from mcit_bench.data.hub import load_hub_split
from mcit_bench.data.stream import SyntheticSource, TaskStream, load_stream, locate_stream
from mcit_bench.data.synthetic import SyntheticSpec, generate
from mcit_bench.evaluate import generate_answers, test_rows
from mcit_bench.methods.base import Method, RunContext
from mcit_bench.methods.registry import METHODS
from mcit_bench.models.fingerprint import weights_fingerprint
from mcit_bench.models.loading import PRECISIONS, compute_precision, resolve_model_path
from mcit_bench.rescore import companion_scores, oracle_scores, prediction_digests, published_scores
from mcit_bench.results import (
    device_description,
    git_state,
    matrix_from_rows,
    package_versions,
    rounded,
)
from mcit_bench.rundir import (
    ORACLE_PREDICTIONS,
    RunPaths,
    claim_run_directory,
    load_checkpoint,
    remove_leftovers,
    run_directory,
    save_checkpoint,
    stage_digests,
    verified_progress,
    write_predictions,
)
from mcit_bench.schema import SCHEMA_VERSION
from mcit_bench.scoring.continual import summarize
from mcit_bench.scoring.task_metrics import METRICS, check_metric_names, score_task
from mcit_bench.sharding import gathered

if TYPE_CHECKING:
    from accelerate import Accelerator


def default_cache_root() -> Path:
    return Path(os.environ.get("MCIT_BENCH_CACHE", Path.home() / ".cache" / "mcit-bench"))


def build_method(config: RunConfig) -> Method:
    """The registered method with its typed options (a wrong option is named before anything runs)."""
    from pydantic import ValidationError

    method_cls = METHODS.get(config.method)
    try:
        options = method_cls.Options.model_validate(config.method_options)
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"method {config.method!r} option {field}: {message}") from None
    return method_cls(options)


def prepare_data_root(stream: TaskStream, data_root: Path | None, cache_root: Path) -> Path:
    """Where the stream's files are: generated once for a synthetic stream, given for a real one."""
    source = stream.definition.source
    if isinstance(source, SyntheticSource):
        spec = SyntheticSpec(source.seed, stream.train_per_task or source.train_per_task,
                             stream.test_per_task or source.test_per_task, tuple(stream.task_names))
        return generate(spec, cache_root / "data")
    if data_root is None:
        raise ConfigError(f"sequence {stream.name!r} reads published data: pass --data-root with its files "
                          f"(see docs/DATA.md and 'mcit-bench data check {stream.name}')")
    if not data_root.is_dir():
        raise ConfigError(f"--data-root {data_root} is not a folder")
    return data_root


def load_stream_data(stream: TaskStream, root: Path, cache_root: Path,
                     validation: ValidationSplit | None = None) -> tuple[dict, dict]:
    """Train and evaluation datasets of every task, through the arrow cache: the test split, or with
    ``validation`` a split carved from the training data (the test split is then never opened)."""
    arrow_cache = cache_root / "arrow"
    train, held_out = {}, {}
    for located in locate_stream(stream, root):
        task = located.task
        if task.hub is not None:
            train_set = load_hub_split(task.hub, root, task.train, task.type, cache_root)
            train_source = test_source = root / task.hub.dataset
        else:
            train_spec, test_spec = located.split_specs()
            train_set = load_split(train_spec, arrow_cache)
            train_source, test_source = located.train, located.test
        require_images(train_set, train_source)
        if len(train_set) == 0:
            raise DataError(f"task {task.name!r} has an empty train split under {root}; check the files named in "
                            f"the sequence")
        if validation is not None:
            train[task.name], held_out[task.name] = carve_validation(train_set, validation, task.name, train_source)
            continue
        test_set = (load_hub_split(task.hub, root, task.test, task.type, cache_root) if task.hub is not None
                    else load_split(test_spec, arrow_cache))
        if stream.test_per_task is not None and len(test_set) > stream.test_per_task:
            test_set = test_set.select(range(stream.test_per_task))
        require_images(test_set, test_source)
        if len(test_set) == 0:
            raise DataError(f"task {task.name!r} has an empty test split under {root}; check the files named in the "
                            f"sequence")
        train[task.name], held_out[task.name] = train_set, test_set
    return train, held_out


def carve_validation(train_set, validation: ValidationSplit, task: str, source: Path) -> tuple[Any, Any]:
    """(what trains, the validation split): a fixed random share of the training samples, at most
    ``max_per_task``, drawn with the split's own seed so every trial holds out the same samples."""
    size = min(validation.max_per_task, max(1, round(validation.fraction * len(train_set))))
    if size >= len(train_set):
        raise DataError(f"task {task!r} has {len(train_set)} training samples in {source}, too few to hold out a "
                        f"validation split; tune on a sequence or subset with more training data")
    generator = torch.Generator().manual_seed(validation.seed)
    order = torch.randperm(len(train_set), generator=generator).tolist()
    return train_set.select(sorted(order[size:])), train_set.select(sorted(order[:size]))


def require_images(dataset, source: Path) -> None:
    """Every image a split names must exist; the first few missing ones are named."""
    missing = sorted({path for path in dataset["image"] if path and not os.path.isfile(path)})  # "": text only
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{source}: {len(missing)} image files are missing ({shown}); check --data-root or the "
                        f"'image' fields")


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_memory_mb() -> float:
    """This process's peak since :func:`reset_peak_memory`: CUDA's peak allocation, or on CPU the
    peak resident set (Linux's VmHWM, which can be reset; else the whole life's ru_maxrss)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        line = next(line for line in PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # KiB
    except (OSError, StopIteration, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory() -> None:
    """Forget the peak so far (after sharding: the whole model each process read before it cut its
    share is not what the run holds). On Linux writing 5 to clear_refs resets VmHWM."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak stays the whole life's


def rank_memory(model: torch.nn.Module, accelerator: Accelerator) -> list[dict[str, Any]]:
    """Every process's parameter bytes (in shards, replicated) and peak memory, in rank order."""
    from mcit_bench.sharding import local_bytes

    held = local_bytes(model)
    mine = {"rank": accelerator.process_index, "param_bytes_sharded": held["sharded"],
            "param_bytes_replicated": held["replicated"], "peak_memory_mb": round(peak_memory_mb(), 1)}
    if accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return sorted(gather_object([mine]), key=lambda entry: entry["rank"])


def sequence_reference(stream: TaskStream) -> dict[str, Any]:
    """The stream's identity as results.json records it (``variant`` only for sequences that have one)."""
    reference: dict[str, Any] = {"name": stream.name, "version": stream.version, "subset": stream.subset,
                                 "content_hash": stream.content_hash(), "tasks": stream.task_names}
    if stream.variant is not None:
        reference["variant"] = stream.variant
    return reference


def generate_sharded(accelerator: Accelerator, model, collator, rows, config: RunConfig, method, run,
                     oracle_task: int | None = None) -> tuple[list[str], list[int] | None]:
    """Every process answers every ``world``-th row; the answers come back to all, in row order,
    each row exactly once. A sharded model is gathered whole for the evaluation (:func:`evaluate_row`),
    so no forward here waits on another process."""
    world, rank = accelerator.num_processes, accelerator.process_index
    with compute_precision(config.precision, run.device):
        answers, chosen = generate_answers(model, collator, rows[rank::world], config.eval.batch_size,
                                           config.eval.max_new_tokens, method, run, run.device, oracle_task)
    if world == 1:
        return answers, chosen
    from accelerate.utils import gather_object

    shards = {shard_rank: (shard_answers, shard_chosen)
              for shard_rank, shard_answers, shard_chosen in gather_object([(rank, answers, chosen)])}
    ordered_answers: list[str] = [""] * len(rows)
    ordered_chosen: list[int] = [0] * len(rows)
    selects = False
    for shard_rank, (shard_answers, shard_chosen) in shards.items():
        ordered_answers[shard_rank::world] = shard_answers
        if shard_chosen is not None:
            selects = True
            ordered_chosen[shard_rank::world] = shard_chosen
    return ordered_answers, (ordered_chosen if selects else None)


def evaluate_row(model, collator, method, run, stream, test_sets, paths, stage, config, accelerator
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Evaluate every task after ``stage`` (0 = base model); the main process writes the predictions.

    Returns the scores and, for a method that selects tasks without labels, the share of each
    already-trained task's test samples it sent to that task (task-selection accuracy, in %). Such a
    method also answers each trained task again routed by its true id (the oracle predictions,
    scored into results' ``oracle`` matrix at the end).
    """
    with gathered(model, config.shard is not None):
        return evaluate_tasks(model, collator, method, run, stream, test_sets, paths, stage, config, accelerator)


def evaluate_tasks(model, collator, method, run, stream, test_sets, paths, stage, config, accelerator
                   ) -> tuple[dict[str, float], dict[str, float]]:
    scores: dict[str, float] = {}
    selection: dict[str, float] = {}
    for position, task in enumerate(stream.tasks):
        rows = test_rows(test_sets[task.name])
        predictions, chosen = generate_sharded(accelerator, model, collator, rows, config, method, run)
        if accelerator.is_main_process:
            write_predictions(paths.predictions(stage, task.name), rows, predictions)
        scores[task.name], _ = score_task(task.metric_name, predictions, [row_to_record(row) for row in rows])
        if chosen is not None and 0 < stage and position < stage:
            selection[task.name] = round(100.0 * sum(c == position for c in chosen) / len(chosen), 2)
            oracle, _ = generate_sharded(accelerator, model, collator, rows, config, method, run, position)
            if accelerator.is_main_process:
                write_predictions(paths.predictions(stage, task.name, ORACLE_PREDICTIONS), rows, oracle)
    return scores, selection


def run_stream(
    config: RunConfig,
    output_root: Path = Path("runs"),
    run_id: str | None = None,
    data_root: Path | None = None,
    cache_root: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    console=None,
    stop_after_stage: int | None = None,
    after_stage: Callable[[int, dict[int, dict[str, float]]], None] | None = None,
) -> dict[str, Any]:
    """Run ``config`` to the end (or to ``stop_after_stage``) and return its results.

    ``after_stage(stage, rows)`` sees the matrix rows measured so far after every finished stage (a
    tuning study reports them to its pruner, which may stop the run by raising).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from mcit_bench.models.blank_image import install_blank_image
    from mcit_bench.models.collate import InstructionCollator
    from mcit_bench.models.loading import (
        load_named_processor,
        load_weights,
        model_config,
        sequence_limit,
        unreadable_tasks,
    )
    from mcit_bench.train import stage_seed, train_stage

    started = time.perf_counter()
    checkout = git_state()  # the checkout whose code this process imported, not whatever it holds at the end
    cache_root = cache_root or default_cache_root()
    stream = load_stream(config.sequence, config.subset, config.variant)
    check_metric_names(stream.tasks)
    for task in stream.tasks:  # a metric that cannot run fails now, not after hours of training
        METRICS.get(task.metric_name).preflight()
    architecture = model_config(config.model)
    method = build_method(config)
    paths = RunPaths(run_directory(output_root, stream, config, run_id))
    root = prepare_data_root(stream, data_root, cache_root)
    train_sets, test_sets = load_stream_data(stream, root, cache_root, config.validation)
    processor = load_named_processor(config.model)
    collator = InstructionCollator(processor, config.training.max_length
                                   or sequence_limit(config.model, architecture, processor.tokenizer))
    for task, train_set in train_sets.items():  # a sample that cannot fit fails now, before the run directory
        collator.check_fits(task, train_set)
    # several processes (accelerate launch, torchrun): each checks the directory, the main one claims it
    # DDP must not broadcast rank 0's buffers into every process before each forward: what a method
    # counts in a buffer on its share of the batch (BranchLoRA's branch usage) is summed over the
    # processes by the method, and the model's own buffers (position tables) are the same everywhere
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    main = accelerator.is_main_process
    if config.shard == "fsdp":
        from mcit_bench.sharding import check_can_shard

        check_can_shard(config.method, method.capabilities.can_shard, accelerator.num_processes,
                        bool(config.method_options.get("full")))
    progress_state = claim_run_directory(paths, config, resume, overwrite, write=False)
    accelerator.wait_for_everyone()
    if main:
        claim_run_directory(paths, config, resume, overwrite)
    accelerator.wait_for_everyone()
    console = console if main else None
    torch.manual_seed(config.seed)
    model = load_weights(config.model, PRECISIONS[config.precision], accelerator.device)
    if console is not None and main:
        for warning in unreadable_tasks(processor.tokenizer, train_sets):
            console.print(warning, style="yellow", highlight=False, markup=False)
    base_ids = {id(p) for p in model.parameters()}  # adapters may rename base weights, never replace them
    run = RunContext(stream=stream, seed=config.seed, train_data=train_sets, device=accelerator.device,
                     collator=collator)
    model = method.setup(model, run).to(accelerator.device)
    if config.shard == "fsdp":
        from mcit_bench.sharding import shard_model

        # what the method added or trains stays replicated; the loaded base is sharded
        keep = {p for p in model.parameters() if id(p) not in base_ids or p.requires_grad}
        model = shard_model(model, accelerator, config.precision, keep)
        reset_peak_memory()
    # after sharding, so a sharded embedding layer's own hooks never see the blank image's zero
    install_blank_image(model, collator.blank_image(), accelerator.device)  # every process runs the vision side
    stages = method.stages(stream)
    tasks = stream.task_names

    if progress_state:
        progress_state = verified_progress(paths, progress_state, console.print if console else lambda message: None)
    if main and paths.root.exists():
        remove_leftovers(paths)
    rows: dict[int, dict[str, float]] = {int(k): v for k, v in progress_state.get("rows", {}).items()}
    stage_log: list[dict[str, Any]] = progress_state.get("stages", [])
    digests: dict[str, dict[str, str]] = progress_state.get("digests", {})
    trained: set[str] = set(progress_state.get("trained", []))
    done = len(stage_log)
    if done:
        trained = load_checkpoint(paths.checkpoint(done), model, method) | trained
        if console:
            console.print(f"resuming {paths.root} after stage {done} of {len(stages)}")

    previous_wall = float(progress_state.get("wall_seconds", 0.0))

    def save_progress(stage: int) -> None:
        """After ``stage`` finished: its rows, and the sha256 of every file it wrote, for a verified resume."""
        if not main:
            return
        digests[str(stage)] = stage_digests(paths, stage)
        atomic_write_json(paths.progress, {"rows": {str(k): v for k, v in rows.items()}, "stages": stage_log,
                                           "trained": sorted(trained), "digests": digests,
                                           "wall_seconds": previous_wall + time.perf_counter() - started})

    if 0 not in rows:
        rows[0], _ = evaluate_row(model, collator, method, run, stream, test_sets, paths, 0, config, accelerator)
        save_progress(0)

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),  # no loss before step 1
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=console is None, transient=True) as progress:
        for stage in stages[done:]:
            if stop_after_stage is not None and stage.index > stop_after_stage:
                break
            torch.manual_seed(stage_seed(config.seed, stage.index))
            method.before_task(stage, run)
            trained |= {name for name, p in model.named_parameters() if p.requires_grad}
            cut_before = collator.cut_samples
            stats = train_stage(model, method, stage, run, collator, config.training, stream.task_steps(),
                                accelerator, progress, config.precision, sharded=config.shard is not None)
            if console and collator.cut_samples > cut_before:
                console.print(f"warning: {collator.cut_samples - cut_before} training samples of stage {stage.index} "
                              f"were longer than {collator.max_length} tokens and lost the end of their answer "
                              f"(--max-length raises the limit)", style="yellow", highlight=False, markup=False)
            method.after_task(stage, run)
            if main:
                save_checkpoint(paths.checkpoint(stage.index), model, trained, method)
            scores, selection = evaluate_row(model, collator, method, run, stream, test_sets, paths, stage.index,
                                             config, accelerator)
            first_row = 1 + sum(len(s.tasks) for s in stages[: stage.index - 1])
            for row in range(first_row, first_row + len(stage.tasks)):
                rows[row] = scores
            stage_log.append({"stage": stage.index, "tasks": [t.name for t in stage.tasks], "steps": stats.steps,
                              "train_seconds": round(stats.seconds, 2), "final_loss": round(stats.final_loss, 5),
                              "trainable_params": stats.trainable_params,
                              "task_selection": selection})
            save_progress(stage.index)
            if console:
                shown = " ".join(f"{task}={scores[task]:.0f}" for task in tasks)
                console.print(f"stage {stage.index} ({stage.name}) done in {stats.seconds:.0f} s: {shown}")
            if after_stage is not None:
                after_stage(stage.index, rows)

    if len(stage_log) < len(stages):
        return {"status": "stopped", "stages_done": len(stage_log)}
    per_rank = rank_memory(model, accelerator)
    results = build_results(config, stream, method, rows, stage_log, paths, model, base_ids,
                            previous_wall + time.perf_counter() - started, test_sets, checkout)
    results["cost"]["per_rank"] = per_rank
    if main:
        extra = companion_scores(paths.root, {task.name: task.type for task in stream.tasks},
                                 [0] + [entry["stage"] for entry in stage_log])
        if extra:  # only runs with caption tasks carry the key
            results["extra_scores"] = extra
        results["prediction_digests"] = prediction_digests(paths.root, tasks, stage_log)
        published = published_scores(paths.root, tasks, stage_log, {
            task.name: task.as_published.metric for task in stream.tasks if task.as_published is not None})
        if published is not None:
            results["as_published"] = published
        oracle = oracle_scores(paths.root, tasks, stage_log,
                               {task.name: task.metric_name for task in stream.tasks})
        if oracle is not None:  # only methods that choose a route carry the key
            results["oracle"] = oracle
        atomic_write_json(paths.results, results)
    accelerator.wait_for_everyone()
    return results


def build_results(config, stream, method, rows, stage_log, paths, model, base_ids, seconds, test_sets,
                  checkout: dict[str, Any]) -> dict:
    """The results document; its summary is computed from the matrix, never stored separately."""
    tasks = stream.task_names
    matrix = matrix_from_rows(rows, tasks)
    total = sum(p.numel() for p in model.parameters())
    added = sum(p.numel() for p in model.parameters() if id(p) not in base_ids)
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
            "git": checkout,
            "packages": package_versions(),
            "device": device_description(),
            "upper_bound": method.capabilities.upper_bound,
            "task_id_at_eval": method.capabilities.task_id_at_eval,
            "run_dir": str(paths.root),
        },
        "tasks": tasks,
        "task_info": {task.name: {"type": task.type, "metric": task.metric_name, "like": task.like,
                                  "test_samples": len(test_sets[task.name])} for task in stream.tasks},
        "matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
        "summary": {name: rounded(value) for name, value in summarize(matrix).items()},
        "stages": stage_log,
        "cost": {
            "trainable_params_per_stage": [entry["trainable_params"] for entry in stage_log],
            "added_params": added,
            "total_params": total,
            "train_seconds": round(sum(entry["train_seconds"] for entry in stage_log), 2),
            "wall_seconds": round(seconds, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1),
        },
    }
