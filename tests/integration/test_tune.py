"""``mcit-bench tune``: an Optuna study on a validation split carved from the training data.

The search test runs three trials of seqft on synth-coin's ci subset (4 steps a task, so the study,
not the learning, is what it checks): the chosen trial is the best finished one on validation, each
trial's value is its own run's final accuracy on that split, and no test file is ever opened. A
tuning file then trains a final run (all training data, test split) that the leaderboard files
apart from default entries. The bad-input tests stop before any training.
"""

import hashlib
import json
import time

import pytest
from typer.testing import CliRunner

import mcit_bench.data.prepare as prepare_module
import mcit_bench.data.run_data as run_data_module
import mcit_bench.engine.run as runner_module
from mcit_bench.board.leaderboard import entry_from_results
from mcit_bench.cli import app
from mcit_bench.config import RunConfig, ValidationSplit
from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.methods.search import Choice, LogUniform
from mcit_bench.results.document import load_results
from mcit_bench.tune import TuneRequest, open_study, seen_mean, tune, tuning_summary
from tests.conftest import FIXTURES

cli = CliRunner()
SEARCH = ("--method", "seqft", "--subset", "ci", "--steps-per-task", "4")


def invoke(*args: str):
    return cli.invoke(app, list(args))


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache_root):
    """Three trials of seqft on the ci subset, every file the runs opened recorded."""
    out = tmp_path_factory.mktemp("tune")
    opened: list[str] = []
    real_load_split = prepare_module.load_split

    def recording_load_split(spec, cache):
        opened.append(str(spec.path))
        return real_load_split(spec, cache)

    patch = pytest.MonkeyPatch()
    for module in (prepare_module, run_data_module):  # the training splits, and the test split
        patch.setattr(module, "load_split", recording_load_split)
    try:
        result = invoke("tune", *SEARCH, "--trials", "3", "--output", str(out / "runs"),
                        "--cache-dir", str(cache_root))
    finally:
        patch.undo()
    assert result.exit_code == 0, result.output
    folder = out / "runs" / "synth-coin" / "seqft" / "tune-seed0-ci"
    return {"out": out, "folder": folder, "summary": json.loads((folder / "tuning.json").read_text()),
            "opened": opened, "output": result.output}


def test_the_chosen_trial_is_the_best_on_validation(study):
    summary = study["summary"]
    trials = summary["trials"]
    assert len(trials) == 3
    assert [t["state"] for t in trials] == ["complete"] * 3  # the pruner waits for five finished trials
    assert summary["budget"]["pruner_startup_trials"] == 5 and summary["budget"]["pruner_warmup_stages"] == 4
    assert summary["budget"]["sampler_random_trials"] == 10  # three trials: a seeded random search
    values = {t["number"]: t["value"] for t in trials}
    best = max(values, key=lambda number: (values[number], -number))
    assert summary["best"]["number"] == best and summary["best"]["value"] == values[best]
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3  # three different settings
    runs = study["out"] / "runs" / "synth-coin" / "seqft"
    for trial in trials:
        run_dir = runs / trial["run_id"]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["validation"] == {"fraction": 0.1, "max_per_task": 100, "seed": 0}
        assert config["training"]["lr"] == trial["params"]["training.lr"]
        assert config["method_options"]["lora_rank"] == trial["params"]["lora_rank"]
        results = json.loads((run_dir / "results.json").read_text())
        assert results["summary"]["final_acc"] == pytest.approx(trial["value"])  # its own run's validation score
        # ci trains on 200 samples a task: 20 are held out and scored, none of the 24 test samples
        assert {info["test_samples"] for info in results["task_info"].values()} == {20}
    chosen = summary["best"]["params"]
    # shown to four significant digits, exact in tuning.json
    told = " ".join(study["output"].split())
    assert (f"best: trial {best} ({values[best]:.2f}) with lora_rank={chosen['lora_rank']}, "
            f"training.lr={chosen['training.lr']:.4g} (exact values in tuning.json)") in told
    # the command it suggests names the study's subset, which a tuned run must match
    assert "mcit-bench run --method seqft --subset ci --tuned" in " ".join(study["output"].split())


def test_the_test_split_is_never_read(study):
    assert study["opened"], "the recording did not see the training files"
    assert all(path.endswith("train.json") for path in study["opened"]), study["opened"]


def test_a_trial_never_goes_on_the_leaderboard(study, tmp_path):
    trial_dir = study["out"] / "runs" / "synth-coin" / "seqft" / study["summary"]["best"]["run_id"]
    refused = invoke("submit", str(trial_dir), "--leaderboard", str(tmp_path / "board.json"))
    assert refused.exit_code == 2 and "is scored on a validation split carved from the training data" in " ".join(
        refused.output.split())
    assert not (tmp_path / "board.json").exists()


def test_the_tuned_run_trains_on_everything_with_the_chosen_settings(tmp_path, cache_root):
    """A tuning.json as tune writes it (for the two-task slice, so the final run takes seconds)."""
    sequence = str(FIXTURES / "two_task_quick.yaml")
    params = {"lora_rank": 8, "training.lr": 0.002}
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({
        "study": "tune-seed0", "identity": {"method": "seqft", "sequence": sequence, "subset": None,
                                            "variant": None, "model": "mcit-tiny"},
        "budget": {"trials": 5}, "best": {"number": 3, "value": 41.5, "params": params}}))
    runs = tmp_path / "runs"
    result = invoke("run", "--sequence", sequence, "--tuned", str(tuning), "--output", str(runs),
                    "--cache-dir", str(cache_root))
    assert result.exit_code == 0, result.output
    results = load_results(runs / "two-task-quick" / "seqft" / "seed0" / "results.json")
    assert results.run.config.tuned.model_dump() == {"study": "tune-seed0", "trials": 5, "best_trial": 3,
                                                     "validation_final_acc": 41.5, "params": params}
    assert results.run.config.training.lr == 0.002 and results.run.method_options["lora_rank"] == 8
    assert results.run.config.validation is None
    assert {info.test_samples for info in results.task_info.values()} == {4}  # the test split, all of it
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    key = entry_from_results(results).key
    assert key.settings == f"tuned-{digest}" and key.label().endswith(f"seqft (task-agnostic, tuned-{digest})")
    # a setting the study chose cannot also be given on the command line
    clash = invoke("run", "--sequence", sequence, "--tuned", str(tuning), "--lr", "0.1", "--output", str(runs))
    assert clash.exit_code == 2 and "chose training.lr; leave it out" in " ".join(clash.output.split())


def test_settings_left_out_compare_with_the_study_as_their_defaults(tmp_path):
    """A study of the default stream and model matches a run that names neither: the identity check
    passes and the next check (a chosen setting also given) answers."""
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({
        "study": "tune-seed0", "identity": {"method": "seqft", "sequence": "synth-coin", "subset": None,
                                            "variant": None, "model": "mcit-tiny"},
        "budget": {"trials": 8}, "best": {"number": 2, "value": 28.3, "params": {"training.lr": 0.002}}}))
    result = invoke("run", "--tuned", str(tuning), "--lr", "0.1", "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "chose training.lr; leave it out" in " ".join(result.output.split())
    other = invoke("run", "--tuned", str(tuning), "--model", "tiny-llava", "--output", str(tmp_path / "runs"))
    assert other.exit_code == 2
    assert "was tuned with model 'mcit-tiny', not 'tiny-llava'" in " ".join(other.output.split())


def test_a_finished_study_is_joined_not_rerun(study, monkeypatch):
    """A second worker on a study that has its budget trains nothing and reports the same choice."""
    monkeypatch.setattr(runner_module, "run_stream", lambda *a, **k: pytest.fail("a finished study trained"))
    result = invoke("tune", *SEARCH, "--trials", "3", "--output", str(study["out"] / "runs"))
    assert result.exit_code == 0, result.output
    assert json.loads((study["folder"] / "tuning.json").read_text())["best"] == study["summary"]["best"]


def test_a_pruned_trial_has_no_final_accuracy(tmp_path):
    """Optuna gives a pruned trial its last running mean as value: tuning.json must not show it as
    the trial's final accuracy, nor choose it."""
    import optuna

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("identity", {"tasks": ["a", "b", "c", "d"]})
    study.optimize(lambda trial: 40.0, n_trials=1)

    def pruned(trial):
        trial.report(70.0, 2)
        raise optuna.TrialPruned()

    study.optimize(pruned, n_trials=1)
    request = TuneRequest(base=RunConfig(validation=ValidationSplit()), trials=2, space={}, output_root=tmp_path,
                          study_name="s", storage="sqlite:///unused.db")
    summary = tuning_summary(study, request, tmp_path)
    assert summary["trials"][1] == {"number": 1, "state": "pruned", "params": {}, "value": None,
                                    "stopped_after_stage": 2, "run_id": None}
    assert summary["best"]["number"] == 0 and summary["best"]["value"] == 40.0
    assert summary["budget"]["pruner_warmup_stages"] == 2


def test_the_pruner_compares_the_mean_over_the_tasks_seen_so_far():
    rows = {0: {"a": 10.0, "b": 0.0, "c": 0.0}, 1: {"a": 80.0, "b": 5.0, "c": 0.0},
            2: {"a": 60.0, "b": 90.0, "c": 3.0}}
    assert seen_mean(rows, ["a", "b", "c"]) == pytest.approx(75.0)  # (60 + 90) / 2
    assert seen_mean({k: rows[k] for k in (0, 1)}, ["a", "b", "c"]) == pytest.approx(80.0)


@pytest.mark.parametrize("args,space,message", [
    (["--trials", "0"], None, "--trials 0 must be between 1 and 10,000"),
    (["--trials", "1000000000000"], None, "--trials 1000000000000 must be between 1 and 10,000"),
    (["--trials", "2"], "colour: {choices: [red]}", "seqft has no setting 'colour'; searchable settings are"),
    (["--trials", "2"], "lora_rank: {choices: [8, 0]}", "lora_rank = 0 is refused"),
    (["--trials", "2"], "training.lr: {log: [0, 0.1]}", "training.lr needs low < high and low > 0 on a log scale"),
    # a study searches the learning rate; a fixed one is not an option of tune (nor a flag of seqft)
    (["--trials", "2", "--lr", "0.001"], None, "--lr is neither an option of this command nor a flag of method"),
    (["--trials", "2", "--storage", "sqlite:////no/such/folder/study.db"], None,
     "the study storage sqlite:////no/such/folder/study.db cannot be opened"),
    (["--trials", "2", "--storage", "nosuchdb://host/x"], None, "the study storage nosuchdb://host/x cannot be opened"),
])
def test_bad_input_is_refused_before_any_training(tmp_path, monkeypatch, args, space, message):
    monkeypatch.setattr(runner_module, "run_stream", lambda *a, **k: pytest.fail("trained despite bad input"))
    extra = []
    if space is not None:
        (tmp_path / "space.yaml").write_text(space + "\n")
        extra = ["--space", str(tmp_path / "space.yaml")]
    result = invoke("tune", *SEARCH, *args, *extra, "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_setting_both_searched_and_fixed_is_refused(tmp_path):
    result = invoke("tune", *SEARCH, "--trials", "2", "--option", "lora_rank=8", "--output", str(tmp_path))
    assert result.exit_code == 2
    assert "lora_rank is both searched and fixed on the command line" in " ".join(result.output.split())


def test_a_study_made_for_another_method_or_stream_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    validation = ValidationSplit()

    def request(method: str, subset: str | None) -> TuneRequest:
        return TuneRequest(base=RunConfig(method=method, subset=subset, validation=validation), trials=2,
                           space={"training.lr": LogUniform(1e-4, 1e-2)}, output_root=tmp_path, study_name="shared",
                           storage=storage)

    open_study(request("seqft", "ci"), tmp_path)
    open_study(request("seqft", "ci"), tmp_path)  # the same search joins
    with pytest.raises(ConfigError, match=r"was made for another search \(it differs in method\)"):
        open_study(request("ewc", "ci"), tmp_path)
    with pytest.raises(ConfigError, match="differs in content_hash, subset"):
        open_study(request("seqft", None), tmp_path)


def test_every_method_declares_a_space_its_options_accept():
    """Each shipped method's own space passes the same check a user's space does."""
    from mcit_bench.methods.registry import METHODS
    from mcit_bench.tune import check_space

    for name in METHODS:
        space = METHODS.get(name).search_space
        assert "training.lr" in space or "lr" in space, name  # the learning rate is searched for every method
        check_space(RunConfig(method=name), space, f"{name}'s search space")
    assert METHODS.get("ewc").search_space["ewc_lambda"] == LogUniform(1e2, 1e6)
    assert METHODS.get("seqft").search_space["lora_rank"] == Choice((8, 16, 32))


def test_a_tuning_file_for_another_method_is_refused(study, tmp_path):
    result = invoke("run", "--method", "ewc", "--subset", "ci", "--tuned", str(study["folder"] / "tuning.json"),
                    "--output", str(tmp_path))
    assert result.exit_code == 2
    assert "was tuned with method 'seqft', not 'ewc'" in " ".join(result.output.split())
    broken = tmp_path / "tuning.json"
    broken.write_text("{}")
    result = invoke("run", *SEARCH, "--tuned", str(broken), "--output", str(tmp_path))
    assert result.exit_code == 2 and "is not a tuning.json of 'mcit-bench tune'" in " ".join(result.output.split())


def fake_run(value: float):
    """A stand-in for a trial's training that returns a fixed validation accuracy."""
    return lambda *args, **kwargs: {"summary": {"final_acc": value}}


def trial_params(folder) -> list[dict]:
    return [trial["params"] for trial in json.loads((folder / "tuning.json").read_text())["trials"]]


def test_a_resumed_study_tries_what_one_uninterrupted_process_tries(tmp_path, monkeypatch):
    """TPE's first trials are random draws from the seed, queued when the study is made: a process that
    resumes a stopped study runs the failed trial's settings again, never a fresh draw nor one already
    tried (before the queue, a resumed EWC study repeated its trial 0 as trial 8)."""
    calls = []

    def stopped_at_the_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DataError("the disk is full")  # the first process stops here
        return {"summary": {"final_acc": 50.0}}

    monkeypatch.setattr(runner_module, "run_stream", stopped_at_the_second_trial)
    assert invoke("tune", *SEARCH, "--trials", "2", "--output", str(tmp_path)).exit_code == 2
    assert invoke("tune", *SEARCH, "--trials", "2", "--output", str(tmp_path)).exit_code == 0  # resumes
    folder = tmp_path / "synth-coin" / "seqft" / "tune-seed0-ci"
    first, failed, resumed = json.loads((folder / "tuning.json").read_text())["trials"]
    assert (first["state"], failed["state"], resumed["state"]) == ("complete", "fail", "complete")
    assert resumed["params"] == failed["params"] != first["params"]
    # one process, never stopped, tries the same two settings
    monkeypatch.setattr(runner_module, "run_stream", fake_run(50.0))
    again = tmp_path / "again"
    assert invoke("tune", *SEARCH, "--trials", "2", "--output", str(again)).exit_code == 0
    assert trial_params(again / "synth-coin" / "seqft" / "tune-seed0-ci") == [first["params"], resumed["params"]]


def test_two_workers_try_what_one_process_tries_and_stop_at_the_budget(tmp_path, monkeypatch):
    """A second worker takes the queued draws the first has not taken, and stops when the trials
    running elsewhere will finish the budget: three trials in all, the settings of one process's three."""
    import optuna

    monkeypatch.setattr(runner_module, "run_stream", fake_run(50.0))
    space = {"training.lr": LogUniform(1e-4, 1e-2), "lora_rank": Choice((4, 8, 16))}
    request = TuneRequest(base=RunConfig(subset="ci", validation=ValidationSplit()), trials=3, space=space,
                          output_root=tmp_path, study_name="s", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    elsewhere = open_study(request, tmp_path)
    taken = elsewhere.ask()  # the first worker is training the first draw
    for name, param in sorted(space.items()):
        param.suggest(taken, name)
    tune(request)  # the second worker joins
    assert [trial.state for trial in open_study(request, tmp_path).trials] == \
        [optuna.trial.TrialState.RUNNING] + [optuna.trial.TrialState.COMPLETE] * 2
    elsewhere.tell(taken, 40.0)
    both = tune(request)  # a third look finds the budget spent and writes the whole study
    alone = RunConfig(subset="ci", validation=ValidationSplit(), seed=0)
    one = tune(TuneRequest(base=alone, trials=3, space=space, output_root=tmp_path / "one", study_name="s"))
    assert [trial["params"] for trial in both["trials"]] == [trial["params"] for trial in one["trials"]]
    assert [trial["state"] for trial in both["trials"]] == ["complete"] * 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_worker_died_is_failed_and_leaves_the_budget(tmp_path, monkeypatch):
    """A trial whose process was killed stays RUNNING in the storage; once its heartbeat is older
    than the grace period the next worker marks it failed and runs the budget's trials in full."""
    import optuna

    import mcit_bench.tune.study as tune_module

    monkeypatch.setattr(tune_module, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tune_module, "STALE_AFTER_SECONDS", 1)
    monkeypatch.setattr(runner_module, "run_stream", fake_run(50.0))
    request = TuneRequest(base=RunConfig(subset="ci", validation=ValidationSplit()), trials=2,
                          space={"training.lr": LogUniform(1e-4, 1e-2)}, output_root=tmp_path, study_name="s",
                          storage=f"sqlite:///{tmp_path / 'shared.db'}")
    study = open_study(request, tmp_path)
    dead = study.ask()  # a worker starts a trial, beats once, and is killed
    dead.suggest_float("training.lr", 1e-4, 1e-2, log=True)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    tune(request)
    trials = open_study(request, tmp_path).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert trials[2].params == trials[0].params  # the dead trial's settings, run again


# ------------------------------------------------------------------ the plasticity protocol
QUICK = str(FIXTURES / "two_task_quick.yaml")
TWO_TASK = str(FIXTURES / "two_task.yaml")  # 30 steps a task: enough for fine-tuning to learn something


@pytest.fixture(scope="module")
def protocol(tmp_path_factory, cache_root):
    """LwF through the plasticity protocol on the two-task slice, from the command line."""
    out = tmp_path_factory.mktemp("plasticity")
    result = invoke("tune", "--protocol", "plasticity", "--method", "lwf", "--sequence", TWO_TASK,
                    "--validation-fraction", "0.25", "--output", str(out), "--cache-dir", str(cache_root))
    assert result.exit_code == 0, result.output
    assert "train with it: mcit-bench run --config" in result.output
    folder = out / "two-task" / "lwf" / "plasticity-seed0"
    return json.loads((folder / "plasticity.json").read_text()), folder


def test_each_accepted_task_reaches_its_share_of_fine_tunings_accuracy(protocol):
    summary, _ = protocol
    assert [stage["task"] for stage in summary["stages"]] == ["imagenet", "textvqa"]
    for stage in summary["stages"]:
        assert stage["threshold"] == pytest.approx(0.8 * stage["reference"])
        tried = stage["tries"]
        # the top of LwF's range (2.0), halved at each try; every try but the accepted one fell short
        assert [t["value"] for t in tried] == [2.0 * 0.5 ** k for k in range(len(tried))]
        assert all(t["accuracy"] < stage["threshold"] for t in tried[:-1])
        if stage["chosen"] > 0:
            assert stage["chosen"] == tried[-1]["value"] and stage["accuracy"] == tried[-1]["accuracy"]
            assert stage["accuracy"] >= stage["threshold"]
        else:  # nothing in the range reached it: fine-tuning's model went on
            assert stage["accuracy"] == stage["reference"] and tried[-1]["value"] * 0.5 < 0.1


def test_the_chosen_schedule_is_a_run_config_for_the_test_split(protocol):
    from mcit_bench.config import load_config_file, parse_run_config

    summary, folder = protocol
    config = parse_run_config(load_config_file(folder / "run_config.json"), "run_config.json")
    assert config.validation is None and config.method == "lwf"
    assert config.stage_options == {stage["stage"]: {"lwf_lambda": stage["chosen"]} for stage in summary["stages"]}


@pytest.mark.parametrize("args, message", [
    (("--method", "seqft"), "method 'seqft' has no stability setting to decay, so --protocol plasticity cannot "
                            "tune it; it tunes ewc, lwf, olora, reglora"),
    (("--method", "lwf", "--margin", "1.5"), "--margin 1.5 must lie between 0 and 1"),
    (("--method", "lwf", "--decay", "0"), "--decay 0.0 must lie between 0 and 1"),
])
def test_a_method_or_setting_the_protocol_cannot_follow_is_refused_in_one_sentence(tmp_path, args, message):
    result = invoke("tune", "--protocol", "plasticity", *args, "--sequence", QUICK, "--output", str(tmp_path))
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_the_equal_budget_study_needs_its_trials(tmp_path):
    result = invoke("tune", "--method", "seqft", "--sequence", QUICK, "--output", str(tmp_path))
    assert result.exit_code != 0 and "--trials is missing" in result.output
