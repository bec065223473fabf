"""What this version of mcit-bench ships that runs and submissions are checked against: the packaged
model's name and the folder of its weights. Here, on the ground floor, so that the leaderboard can
check a submission's weights without loading the models (and torch with them)."""

from __future__ import annotations

from pathlib import Path

TINY_NAME = "mcit-tiny"  # the registered name of the packaged model


def packaged_tiny_folder() -> Path:
    """Where the pre-trained mcit-tiny lives inside the installed package (written by pretrain-tiny)."""
    return Path(__file__).resolve().parent.parent / "models" / "mcit_tiny"
