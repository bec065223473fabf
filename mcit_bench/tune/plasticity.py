"""``mcit-bench tune --protocol plasticity``: De Lange et al.'s continual hyper-parameter framework
(TPAMI 2021, "A continual learning survey: Defying forgetting in classification tasks", arXiv
1909.08383, its Section 4), task by task, on the validation split.

For each new task:
1. **Maximal plasticity**: the method without its stability term (its ``stability`` option at 0, which
   for EWC, LwF, O-LoRA and RegLoRA is fine-tuning of the method's own trainable set) trains the task
   from the model the earlier tasks left; its accuracy on the task is the reference.
2. **Stability decay**: the stability option starts at the top of the method's search range and is
   multiplied by ``decay`` until the task reaches ``1 - margin`` of the reference (the paper's
   ``p = 0.2`` and ``alpha = 0.5`` are the defaults); below the range's bottom the task takes the
   reference's model, fine-tuning's.
The accepted model goes on to the next task. The study's learning rate is the run's: the paper also
searches it in step 1, which the equal-budget study does here.

Each try of a stage continues a copy of the accepted run of the stages before it
(``rundir.branch_run_directory``), so the protocol trains each stage a few times, not the stream.
The chosen values are per stage (``RunConfig.stage_options``); ``plasticity.json`` records every try,
and ``run_config.json`` beside it trains on the full training data with them (``mcit-bench run
--config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError
from mcit_bench.core.io import atomic_write_json
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.registry import METHODS, build_method
from mcit_bench.methods.search import Choice
from mcit_bench.rundir import RunPaths, branch_run_directory, path_part, run_directory

PLASTICITY_FILE = "plasticity.json"
RUN_CONFIG_FILE = "run_config.json"  # the chosen schedule as a config 'mcit-bench run --config' takes


@dataclass(frozen=True)
class PlasticityRequest:
    base: RunConfig  # the method, stream, model, seed, validation split and every fixed setting
    output_root: Path
    name: str  # the protocol's folder and its runs' prefix
    margin: float = 0.2  # p: a try is accepted at (1 - p) of the reference's accuracy on the new task
    decay: float = 0.5  # alpha: the stability setting's factor from one try to the next
    data_root: Path | None = None
    cache_root: Path | None = None


def stability_range(method: str) -> tuple[str, float, float]:
    """The method's stability option and the top and bottom of its search range, or one sentence saying
    why the protocol cannot decay it."""
    method_cls = METHODS.get(method)
    followers = sorted(name for name in METHODS.names() if METHODS.get(name).stability is not None)
    option = method_cls.stability
    if option is None:
        raise ConfigError(f"method {method!r} has no stability setting to decay, so --protocol plasticity cannot "
                          f"tune it; it tunes {', '.join(followers)}, and the default protocol tunes every method")
    param = method_cls.search_space.get(option)
    if param is None or isinstance(param, Choice):
        raise ConfigError(f"method {method!r} searches its stability setting {option} over no range, so "
                          f"--protocol plasticity has no top to decay from; give it a range in its search space")
    return option, float(param.high), float(param.low)


def check_request(request: PlasticityRequest) -> None:
    if request.base.validation is None:
        raise ConfigError("the plasticity protocol needs a validation split (RunConfig.validation); it never "
                          "scores on test")
    if not 0 < request.margin < 1:
        raise ConfigError(f"--margin {request.margin} must lie between 0 and 1: a task is accepted at (1 - margin) "
                          f"of fine-tuning's accuracy")
    if not 0 < request.decay < 1:
        raise ConfigError(f"--decay {request.decay} must lie between 0 and 1: each try multiplies the stability "
                          f"setting by it")
    if request.base.stage_options:
        raise ConfigError("the plasticity protocol chooses stage_options itself; leave them out of the config")


def plasticity_protocol(request: PlasticityRequest, console=None) -> dict[str, Any]:
    """Run the protocol over the stream and write ``plasticity.json``; returns what it holds."""
    from mcit_bench.engine.run import run_stream

    check_request(request)
    base = request.base
    option, top, bottom = stability_range(base.method)
    stream = load_stream(base.sequence, base.subset, base.variant)
    stages = build_method(base).stages(stream)
    if any(len(stage.tasks) != 1 for stage in stages):
        raise ConfigError(f"method {base.method!r} trains several tasks in one stage; the plasticity protocol "
                          f"accepts one new task at a time")
    folder = run_directory(request.output_root, stream, base, path_part(request.name, "protocol name"))
    accepted: dict[int, dict[str, float]] = {}
    before: RunPaths | None = None  # the accepted run, stopped after the previous stage
    record: list[dict[str, Any]] = []

    def attempt(stage: int, value: float, label: str) -> tuple[float, RunPaths]:
        config = base.model_copy(update={"stage_options": {**accepted, stage: {option: value}}})
        run_id = f"{request.name}-stage{stage}-{label}"
        paths = RunPaths(run_directory(request.output_root, stream, config, run_id))
        if before is not None:
            branch_run_directory(before, paths, config, stage - 1)
        seen: dict[int, dict[str, float]] = {}
        run_stream(config, request.output_root, run_id, request.data_root, request.cache_root,
                   resume=before is not None, overwrite=before is None, console=console, stop_after_stage=stage,
                   after_stage=lambda index, rows: seen.update(rows))
        return seen[stage][stages[stage - 1].tasks[0].name], paths

    for stage in range(1, len(stages) + 1):
        reference, reference_paths = attempt(stage, 0.0, "reference")
        threshold = (1 - request.margin) * reference
        tries, value, chosen = [], top, None
        while value >= bottom:
            accuracy, paths = attempt(stage, value, f"{value:.6g}")
            tries.append({"value": value, "accuracy": accuracy})
            if accuracy >= threshold:
                chosen = (value, accuracy, paths)
                break
            value *= request.decay
        if chosen is None:  # no setting in the range lets the task learn: fine-tuning's model goes on
            chosen = (0.0, reference, reference_paths)
        accepted[stage] = {option: chosen[0]}
        before = chosen[2]
        record.append({"stage": stage, "task": stages[stage - 1].tasks[0].name, "reference": reference,
                       "threshold": threshold, "tries": tries, "chosen": chosen[0], "accuracy": chosen[1],
                       "run_dir": str(chosen[2].root)})
    final = base.model_copy(update={"stage_options": accepted, "validation": None})
    summary = {"protocol": "plasticity", "source": "De Lange et al., TPAMI 2021 (arXiv 1909.08383)",
               "method": base.method, "option": option, "top": top, "bottom": bottom, "margin": request.margin,
               "decay": request.decay, "validation_config": base.as_json(), "stages": record,
               "run_config": final.as_json()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / RUN_CONFIG_FILE, final.as_json())
        atomic_write_json(folder / PLASTICITY_FILE, {**summary, "folder": str(folder)})
    except OSError as error:
        raise ConfigError(f"cannot write the protocol's files in {folder} ({error.strerror}); choose another "
                          f"--output") from None
    return {**summary, "folder": str(folder)}
