"""benchmarks/tuned-synth-coin holds, for every registered method, the settings its study chose as a
run config that the CLI's --config accepts and the method's options accept."""

from __future__ import annotations

from pathlib import Path

from mcit_bench.board.leaderboard import read_leaderboard
from mcit_bench.config import load_config_file, parse_run_config
from mcit_bench.methods.registry import METHODS, build_method
from mcit_bench.results.identity import tuned_key
from mcit_bench.tune.study import read_tuning

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "tuned-synth-coin"


def pending_methods() -> set[str]:
    """The methods benchmarks/tuned-synth-coin/PENDING.md declares not yet tuned ("- name: why")."""
    lines = (FOLDER / "PENDING.md").read_text().splitlines()
    return {line[2:].split(":")[0] for line in lines if line.startswith("- ")}


def test_every_method_has_its_tuned_config_and_it_builds():
    files = {path.stem: path for path in FOLDER.glob("*.yaml")}
    # each method has its settings or is declared pending, never both
    assert set(files) | pending_methods() == set(METHODS.names()) and not set(files) & pending_methods()
    for name, path in files.items():
        config = parse_run_config(load_config_file(path), str(path))
        assert config.method == name and config.sequence == "synth-coin" and config.validation is None
        build_method(config)
    # the choices docs/BENCHMARKS.md's headline table gives
    chosen = {name: parse_run_config(load_config_file(path), str(path)) for name, path in files.items()}
    assert chosen["dmole"].method_options == {"rank": 4} and chosen["dmole"].training.lr == 0.0036396393567863887
    assert chosen["expansion"].method_options == {"lr": 0.006074996073425695}
    assert chosen["ewc"].method_options == {"ewc_lambda": 1143.463874347219, "gamma": 0.8871168447171083,
                                            "lora_rank": 16}


def test_each_settings_file_is_its_study_choice_and_its_three_seeds_are_on_the_shipped_board():
    board = read_leaderboard(FOLDER.parents[1] / "leaderboard" / "leaderboard.json")
    for path in FOLDER.glob("*.yaml"):
        raw = load_config_file(path)
        # a study's names: options as they are, training settings as training.NAME
        params = {**raw.get("method_options", {}),
                  **{f"training.{name}": value for name, value in raw.get("training", {}).items()}}
        study = FOLDER / "studies" / f"{path.stem}.json"
        if study.exists():
            assert read_tuning(study).best.params == params, path.stem
        key = tuned_key(params)
        seeds = sorted(entry.seed for entry in board.entries
                       if entry.key.method == path.stem and entry.key.settings == key)
        assert seeds == [0, 1, 2], path.stem
