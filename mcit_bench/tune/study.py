"""``mcit-bench tune``: an equal-budget hyper-parameter search on a validation split, with Optuna.

The protocol the continual-learning literature asks of a fair comparison:
- every method varies the settings its own file declares (``Method.search_space``);
- each trial is a whole run of the stream, trained on the training data minus a validation split
  carved from it and scored on that split (``RunConfig.validation``); the test split is never read;
- every method gets the same number of trials, each with the stream's own step budget; the
  objective is the final average accuracy on the validation split, and Optuna's median pruner may
  stop a trial whose running mean over the tasks seen so far trails the others';
- the study lives in an Optuna storage: an SQLite file next to the trials by default, or any
  database URL, so several processes or machines can share one study and stop together at the
  budget.

The chosen settings are written to ``tuning.json``; ``mcit-bench run --tuned tuning.json`` trains on
the full training data with them and records where they came from (``RunConfig.tuned``).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from mcit_bench.config import RunConfig, TrainingConfig, TunedFrom, parse_run_config
from mcit_bench.core.errors import ConfigError, DataError, first_problem
from mcit_bench.core.io import atomic_write_json
from mcit_bench.data.stream import TaskStream, load_stream
from mcit_bench.methods.registry import METHODS
from mcit_bench.methods.search import TRAINING_PREFIX, SearchSpace, parse_param, space_to_json

if TYPE_CHECKING:
    import optuna

TUNING_FILE = "tuning.json"
# The median pruner compares a trial's running mean over the tasks seen so far with the finished
# trials' at the same stage. Against fewer than five finished trials, on a validation split of a few
# dozen answers a task, it stops good settings by chance (a first study, 8 EWC trials on the ci subset
# with two references, pruned 6, among them the best running mean); and before half the stream the
# running mean rewards plasticity only, while forgetting shows later.
PRUNER_STARTUP_TRIALS = 5
# TPE draws its first trials at random (Optuna's default, kept): a study of up to this many trials is
# a seeded random search, the classic equal-budget baseline; TPE models the results from the next.
SAMPLER_STARTUP_TRIALS = 10
HEARTBEAT_SECONDS = 60
STALE_AFTER_SECONDS = 300


def pruner_warmup_stages(tasks: int) -> int:
    return tasks // 2


def training_key(name: str) -> str | None:
    """``lr`` for the setting ``training.lr``; None for a method option."""
    return name[len(TRAINING_PREFIX):] if name.startswith(TRAINING_PREFIX) else None


@dataclass(frozen=True)
class TuneRequest:
    base: RunConfig  # the method, stream, model, seed and every setting that is not searched
    trials: int  # the study's budget: trials in all, over every process that shares it
    space: SearchSpace
    output_root: Path
    study_name: str
    storage: str | None = None  # None: an SQLite file in the study's folder
    data_root: Path | None = None
    cache_root: Path | None = None

    @functools.cached_property
    def stream(self) -> TaskStream:
        return load_stream(self.base.sequence, self.base.subset, self.base.variant)

    def storage_url(self, folder: Path) -> str:
        return self.storage or f"sqlite:///{folder / 'study.db'}"


def method_space(method: str) -> SearchSpace:
    return dict(METHODS.get(method).search_space)


def read_space_file(path: Path) -> SearchSpace:
    """A YAML search space that replaces the method's: ``name: {log|range: [low, high]}`` or ``{choices: [...]}``."""
    from mcit_bench.config import load_config_file

    raw = load_config_file(path)
    if not raw:
        raise ConfigError(f"search space {path} names no setting; give at least one, for example "
                          f"training.lr: {{log: [1.0e-4, 1.0e-2]}}")
    return {str(name): parse_param(str(name), value, f"search space {path}") for name, value in raw.items()}


def apply_params(base: RunConfig, params: dict[str, Any], source: str) -> RunConfig:
    """``base`` with the searched settings put in place (``training.*`` into training, the rest into
    the method's options); a value the config or the method refuses is named."""
    from mcit_bench.methods.registry import build_method

    raw = base.model_dump(mode="python")
    for name, value in params.items():
        key = training_key(name)
        if key is not None:
            raw["training"][key] = value
        else:
            raw["method_options"][name] = value
    config = parse_run_config(raw, source)
    build_method(config)  # the method's options check the values (a rank that does not split, ...)
    return config


def check_space(base: RunConfig, space: SearchSpace, source: str) -> None:
    """Refuse, before any training, a setting the config or the method does not have, one also fixed
    on the command line, or a bound or choice the method's options would refuse."""
    if not space:
        raise ConfigError(f"{source} is empty: tune needs at least one setting to search")
    options = METHODS.get(base.method).Options
    fixed = set(base.method_options) | {TRAINING_PREFIX + key for key in base.training.model_fields_set}
    for name, param in space.items():
        key = training_key(name)
        known = key in TrainingConfig.model_fields if key is not None else name in options.model_fields
        if not known:
            choices = sorted(options.model_fields) + sorted(TRAINING_PREFIX + key
                                                            for key in TrainingConfig.model_fields)
            raise ConfigError(f"{source}: {base.method} has no setting {name!r}; searchable settings are "
                              f"{', '.join(choices)}")
        if name in fixed:
            raise ConfigError(f"{source}: {name} is both searched and fixed on the command line; drop one")
        for value in param.values_to_check():
            try:
                apply_params(base, {name: value}, source)
            except ConfigError as error:
                raise ConfigError(f"{source}: {name} = {value!r} is refused ({error}); narrow the range") from None


def study_identity(request: TuneRequest) -> dict[str, Any]:
    """What a study was made for: a worker joining it must search the same question."""
    base, stream = request.base, request.stream
    return {"method": base.method, "sequence": base.sequence, "subset": base.subset, "variant": base.variant,
            "content_hash": stream.content_hash(), "tasks": stream.task_names, "model": base.model, "seed": base.seed,
            "precision": base.precision, "training": base.training.model_dump(mode="json"),
            "eval": base.eval.model_dump(mode="json"), "fixed_options": base.method_options,
            "validation": base.validation.model_dump(mode="json") if base.validation else None,
            "space": space_to_json(request.space), "trials": request.trials}


def study_folder(request: TuneRequest) -> Path:
    from mcit_bench.rundir import path_part

    return (request.output_root / path_part(request.stream.name, "sequence name")
            / path_part(request.base.method, "method name") / path_part(request.study_name, "study name"))


def open_study(request: TuneRequest, folder: Path) -> optuna.Study:
    """Create or join the study; a storage that cannot be opened, or a study made for another
    question, is refused in one sentence."""
    import optuna

    storage = request.storage_url(folder)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # Each trial's process beats every HEARTBEAT_SECONDS; one silent for STALE_AFTER_SECONDS (killed,
        # its machine gone) is marked failed by the next worker, a failed trial leaves the budget, and
        # its settings go back in the queue, so the study still tries what one process would.
        with warnings.catch_warnings():  # Optuna calls the heartbeat experimental; we rely on it as it is
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(
                storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=STALE_AFTER_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
        study = optuna.create_study(study_name=request.study_name, storage=rdb, direction="maximize",
                                    load_if_exists=True)
    except Exception as error:  # SQLAlchemy and Optuna raise many kinds; all mean the same to the user
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"the study storage {redacted(storage)} cannot be opened ({reason}); pass --storage "
                          f"sqlite:///FILE.db or a database URL this machine can reach") from None
    wanted = study_identity(request)
    made_for = study.user_attrs.get("identity")
    if made_for is None:
        study.set_user_attr("identity", wanted)
    elif made_for != wanted:
        differences = [key for key in sorted(wanted) if made_for.get(key) != wanted[key]]
        raise ConfigError(f"study {request.study_name!r} in {redacted(storage)} was made for another search "
                          f"(it differs in {', '.join(differences)}); pass another --study-name")
    queue_seeded_draws(study, request)
    seed = sampler_seed(request.base.seed, joined=made_for is not None, trials_so_far=len(study.trials))
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=SAMPLER_STARTUP_TRIALS, seed=seed)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                               n_warmup_steps=pruner_warmup_stages(len(request.stream.tasks)))
    return study


def seeded_draws(space: SearchSpace, seed: int, count: int) -> list[dict[str, Any]]:
    """The settings of the first ``count`` trials (at most TPE's random start) that one process's
    sampler draws from ``seed``: TPE draws them at random, whatever the trials score, so they can be
    drawn ahead, in a scratch study that only asks."""
    import optuna

    scratch = optuna.create_study(direction="maximize",
                                  sampler=optuna.samplers.TPESampler(n_startup_trials=SAMPLER_STARTUP_TRIALS,
                                                                     seed=seed))
    draws = []
    for _ in range(count):
        trial = scratch.ask()
        draws.append({name: param.suggest(trial, name) for name, param in sorted(space.items())})
    return draws


def queue_seeded_draws(study: optuna.Study, request: TuneRequest) -> None:
    """Queue each of the study's seeded draws that no trial holds: all of them when the study is made,
    on a resume those of the trials that failed. Workers take queued trials in turn, so a study run by
    two workers, or stopped and resumed, tries the settings one uninterrupted process would, and every
    method's study draws the same rates and rank indices."""
    import optuna

    # a queued trial holds its settings as fixed_params until its worker asks for them
    held = [trial.system_attrs.get("fixed_params", trial.params) for trial in study.get_trials(deepcopy=False)
            if trial.state != optuna.trial.TrialState.FAIL]
    for draw in seeded_draws(request.space, request.base.seed, min(request.trials, SAMPLER_STARTUP_TRIALS)):
        if draw not in held:
            study.enqueue_trial(draw)


def budget_covered(study: optuna.Study, trials: int) -> bool:
    """Whether this worker should stop: the budget is finished, or no queued trial is left and the
    trials other workers are running will finish it (a dead one's trial is queued again on a resume)."""
    import optuna

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    finished = sum(state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for state in states)
    waiting = states.count(optuna.trial.TrialState.WAITING)
    running = states.count(optuna.trial.TrialState.RUNNING)
    return finished >= trials or (waiting == 0 and finished + running >= trials)


def sampler_seed(seed: int, joined: bool, trials_so_far: int) -> int:
    """The seed of this process's sampler, for the trials after the queued draws (TPE's model-based ones).

    The process that makes the study draws from the run's seed. A process that joins one (a resumed
    study, a second worker) must not: the same seed replays the draws the study already tried (a
    resumed EWC study repeated its trial 0 as trial 8). Its seed mixes in the trials so far and the
    process id, so two workers that join at once also draw apart.
    """
    import numpy  # here, as Optuna is: the CLI imports this module for every command

    if not joined:
        return seed
    return int(numpy.random.SeedSequence([seed, trials_so_far, os.getpid()]).generate_state(1)[0])


def redacted(storage: str) -> str:
    """A storage URL without its password, for messages and files."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:
        return storage.split("@")[-1] if "@" in storage else storage


def seen_mean(rows: dict[int, dict[str, float]], tasks: list[str]) -> float:
    """Mean accuracy over the tasks trained so far, after the latest row: what the pruner compares."""
    latest = max(rows)
    return sum(rows[latest][task] for task in tasks[:latest]) / latest


MAX_TRIALS = 10_000  # far beyond any equal-budget study; a typo's 10^30 trials never starts


def tune(request: TuneRequest, console=None) -> dict[str, Any]:
    """Run the study to ``request.trials`` trials (joining any already there) and write tuning.json."""
    import optuna

    from mcit_bench.engine.run import run_stream

    if not 1 <= request.trials <= MAX_TRIALS:
        raise ConfigError(f"--trials {request.trials} must be between 1 and {MAX_TRIALS:,}; every method gets the same "
                          f"number of trials")
    if request.base.validation is None:
        raise ConfigError("a tuning study needs a validation split (RunConfig.validation); it never scores on test")
    check_space(request.base, request.space, "search space")
    folder = study_folder(request)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the study folder {folder} ({error.strerror}); choose another "
                          f"--output") from None
    study = open_study(request, folder)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    tasks = request.stream.task_names

    def objective(trial: optuna.Trial) -> float:
        params = {name: param.suggest(trial, name) for name, param in sorted(request.space.items())}
        config = apply_params(request.base, params, f"trial {trial.number}")

        def report(stage: int, rows: dict[int, dict[str, float]]) -> None:
            trial.report(seen_mean(rows, tasks), stage)
            if trial.should_prune():
                raise optuna.TrialPruned()

        run_id = f"{request.study_name}-trial{trial.number:03d}"
        trial.set_user_attr("run_id", run_id)
        results = run_stream(config, request.output_root, run_id, request.data_root, request.cache_root,
                             overwrite=True, console=console, after_stage=report)
        return float(results["summary"]["final_acc"])

    def stop_at_budget(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if budget_covered(study, request.trials):
            study.stop()

    done = sum(1 for trial in study.trials if trial.state in counted)
    if not budget_covered(study, request.trials):
        # a trial that raises (bad data, a full disk) is marked failed in the study and stops the search
        study.optimize(objective, n_trials=request.trials - done, catch=(), callbacks=[stop_at_budget])
    summary = tuning_summary(study, request, folder)
    atomic_write_json(folder / TUNING_FILE, summary)
    return summary


def tuning_summary(study: optuna.Study, request: TuneRequest, folder: Path) -> dict[str, Any]:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise DataError(f"study {request.study_name!r} has no finished trial (all were pruned or failed); run "
                        f"more trials")
    best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earliest trial
    return {
        "study": request.study_name,
        "folder": str(folder),
        "storage": redacted(request.storage_url(folder)),
        "method": request.base.method,
        "identity": study.user_attrs["identity"],
        "objective": "final_acc on the validation split",
        "budget": {"trials": request.trials, "steps_per_task": "the stream's", "sampler": "tpe",
                   "sampler_random_trials": SAMPLER_STARTUP_TRIALS, "pruner": "median",
                   "pruner_startup_trials": PRUNER_STARTUP_TRIALS,
                   "pruner_warmup_stages": pruner_warmup_stages(len(study.user_attrs["identity"]["tasks"]))},
        "trials": [{"number": t.number, "state": t.state.name.lower(), "params": t.params,
                    # a pruned trial has no final accuracy: Optuna's value would be its last running mean
                    "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                    "stopped_after_stage": (max(t.intermediate_values)
                                            if t.state == optuna.trial.TrialState.PRUNED else None),
                    "run_id": t.user_attrs.get("run_id")} for t in study.trials],
        "best": {"number": best.number, "value": best.value, "params": best.params,
                 "run_id": best.user_attrs.get("run_id")},
    }


class _TrialChoice(BaseModel):
    number: int = Field(ge=0)
    value: float
    params: dict[str, Any]


class _Budget(BaseModel):
    trials: int = Field(gt=0)


class TuningFile(BaseModel):
    """The part of tuning.json a final run reads."""

    study: str
    identity: dict[str, Any]
    budget: _Budget
    best: _TrialChoice


def read_tuning(path: Path) -> TuningFile:
    """A tuning.json written by ``tune``, or one sentence saying why it cannot be used."""
    try:
        return TuningFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"--tuned {path} does not exist; point it at the tuning.json a 'mcit-bench tune' wrote") \
            from None
    except OSError as error:
        raise ConfigError(f"--tuned {path} cannot be read ({error.strerror}); check the path") from None
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"--tuned {path} is not a tuning.json of 'mcit-bench tune' (field {field}: {message}); "
                          f"tune again or fix the file") from None


def tuned_config(raw: dict[str, Any], tuning: TuningFile, path: Path, source: str) -> RunConfig:
    """The run config of a final run with a study's chosen settings: the study's stream and model
    must be the run's, and the chosen values are applied and recorded."""
    identity = tuning.identity
    resolved = parse_run_config(raw, source)  # a setting left out compares as its default
    for key in ("method", "sequence", "subset", "variant", "model"):
        if getattr(resolved, key) != identity.get(key):
            raise ConfigError(f"--tuned {path} was tuned with {key} {identity[key]!r}, not "
                              f"{getattr(resolved, key)!r}; run with the study's {key}")
    params = tuning.best.params
    fixed_here = [name for name in params
                  if (training_key(name) in raw.get("training", {}) if training_key(name) is not None
                      else name in raw.get("method_options", {}))]
    if fixed_here:
        raise ConfigError(f"--tuned {path} chose {', '.join(sorted(fixed_here))}; leave it out of the command line "
                          f"and config file")
    tuned = TunedFrom(study=tuning.study, trials=tuning.budget.trials, best_trial=tuning.best.number,
                      validation_final_acc=tuning.best.value, params=params)
    return apply_params(resolved.model_copy(update={"tuned": tuned}), params, f"--tuned {path}")
