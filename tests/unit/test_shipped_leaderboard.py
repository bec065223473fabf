"""The leaderboard the project ships: every registered method, entries that verify like a submission,
all on the shipped mcit-tiny."""

from pathlib import Path

import numpy as np
import pytest

from mcit_bench.leaderboard import read_leaderboard, shipped_sequence, shipped_tiny_weights
from mcit_bench.methods.base import METHODS
from mcit_bench.scoring.continual import summarize

SHIPPED = Path(__file__).resolve().parents[2] / "leaderboard" / "leaderboard.json"


def test_the_shipped_leaderboard_holds_every_method_and_verifies():
    board = read_leaderboard(SHIPPED)
    assert {entry.key.method for entry in board.entries} == set(METHODS.names())
    for entry in board.entries:
        name, version = entry.key.sequence.split("@")
        assert shipped_sequence(name, entry.key.subset) == (int(version), entry.key.content_hash)
        if entry.key.model == "mcit-tiny":  # run on the weights this checkout ships, not an earlier mcit-tiny
            assert entry.key.model_weights == shipped_tiny_weights()
        for metric, value in summarize(np.array(entry.matrix)).items():
            stored = entry.summary[metric]
            assert (stored is None and value is None) or stored == pytest.approx(value, abs=1e-3)
