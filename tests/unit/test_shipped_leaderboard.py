"""The leaderboard the project ships: every registered method, entries that verify like a submission,
all on the shipped mcit-tiny."""

from pathlib import Path

import numpy as np
import pytest

from mcit_bench.board.leaderboard import read_leaderboard
from mcit_bench.board.submit import shipped_sequence, shipped_tiny_weights
from mcit_bench.methods.registry import METHODS
from mcit_bench.scoring.continual import summarize
from tests.unit.test_tuned_configs import pending_methods

SHIPPED = Path(__file__).resolve().parents[2] / "leaderboard" / "leaderboard.json"


def test_the_shipped_leaderboard_holds_every_method_and_verifies():
    board = read_leaderboard(SHIPPED)
    on_board = {entry.key.method for entry in board.entries}
    # every method is on the board or declared pending (benchmarks/tuned-synth-coin/PENDING.md), never both
    assert on_board | pending_methods() == set(METHODS.names()) and not on_board & pending_methods()
    for entry in board.entries:
        name, version = entry.key.sequence.split("@")
        assert shipped_sequence(name, entry.key.subset) == (int(version), entry.key.content_hash)
        if entry.key.model == "mcit-tiny":  # run on the weights this checkout ships, not an earlier mcit-tiny
            assert entry.key.model_weights == shipped_tiny_weights()
        for metric, value in summarize(np.array(entry.matrix)).items():
            stored = entry.summary[metric]
            assert (stored is None and value is None) or stored == pytest.approx(value, abs=1e-3)


def test_the_shipped_leaderboard_is_strict_json_with_valid_names():
    import json

    from mcit_bench.board.submit import MODEL_NAME

    def refuse(name):
        raise AssertionError(f"{name} in {SHIPPED}: not JSON")

    data = json.loads(SHIPPED.read_text(), parse_constant=refuse)
    assert all(MODEL_NAME.match(entry["key"]["model"]) for entry in data["entries"])
    assert {tuple(entry["tasks"]) for entry in data["entries"]} <= {
        tuple(__import__("mcit_bench.data.stream", fromlist=["load_stream"]).load_stream("synth-coin").task_names)}
