"""The leaderboard file: verified submissions of finished runs, one entry per (key, seed).

An entry is keyed by the sequence at its version and content hash, the model and its weights, the
method, the protocol (whether the method was told the task at evaluation), the settings and the
split. The file is written whole to a temporary file and renamed, sorted and indented, so it diffs
line by line. What a submission must pass is ``board/submit.py``'s; statistics over seeds are
``board/stats.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcit_bench.core.errors import DataError, first_problem
from mcit_bench.core.io import atomic_write_json, read_bounded_json
from mcit_bench.core.versions import FileVersion
from mcit_bench.results.document import Results
from mcit_bench.results.frames import FrameRun, cells_frame, runs_frame
from mcit_bench.results.identity import (
    Protocol,
    protocol_of,
    sequence_label,
    settings_of,
    settings_values_of,
    split_of,
)

LEADERBOARD_VERSION = 3  # 2: entry keys name the model's weights; 3: entries carry a verification tier
# How far an entry was proven, strongest first (docs/RESULTS.md, "Verification tiers"):
# reproduced: 'submit --reproduce' trained the recorded config and seed again and got the same predictions;
# verified: the matrix re-scored from predictions whose ids, count and references are the stream's own test split;
# self-checked: re-scored from its predictions, whose references could not be set beside the test split
#   (a published stream submitted without --data-root);
# unverified: a results file alone, its matrix taken on trust.
Tier = Literal["reproduced", "verified", "self-checked", "unverified"]
TIERS: tuple[Tier, ...] = ("reproduced", "verified", "self-checked", "unverified")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryKey(_Strict):
    sequence: str  # name@version
    subset: str | None
    content_hash: str
    model: str
    # sha256 of the model's safetensors (results' run.model_weights): the same name on other weights is
    # another model, so its seeds never average with these; None for a hub id
    model_weights: str | None = None
    method: str
    protocol: Protocol
    # "default": the method's own settings; "tuned-<sha256 of the chosen settings, 12 hex>": settings a
    # 'mcit-bench tune' study chose (results' run.config.tuned); "custom-<sha256, 12 hex>": options or
    # training settings given by hand. Seeds of other choices never average.
    settings: str = Field(default="default", pattern=r"^(default|tuned-[0-9a-f]{12}|custom-[0-9a-f]{12})$")
    # "validation": a run scored on a split carved from its training data (a tuning trial, or a run
    # config with ``validation``). Submit refuses it; aggregated from run folders it stands apart from
    # the test runs of the same settings, whose scores it must never average with.
    split: Literal["test", "validation"] = "test"

    def protocol_label(self) -> str:
        return (self.protocol + (f", {self.settings}" if self.settings != "default" else "")
                + (", validation split" if self.split == "validation" else ""))

    def label(self) -> str:
        subset = f"[{self.subset}]" if self.subset else ""
        weights = f" ({self.model_weights[:12]})" if self.model_weights else ""
        return f"{self.sequence}{subset} / {self.model}{weights} / {self.method} ({self.protocol_label()})"

    def sort_key(self) -> tuple:
        return (self.sequence, self.subset or "", self.model, self.model_weights or "", self.method, self.protocol,
                self.settings, self.split)


class Entry(_Strict):
    key: EntryKey
    seed: int
    tasks: list[str]
    matrix: list[list[float]]
    summary: dict[str, float | None]
    task_selection: dict[str, float]  # after the last stage; empty when the method is told the task
    trainable_params: int  # the most trained at once in any stage
    added_params: int
    wall_seconds: float
    harness_version: str
    commit: str | None
    device: str
    # how far submission proved it (``Tier``); None: submitted before tiers were recorded
    tier: Tier | None = None
    # the values behind key.settings: a study's chosen parameters, or the options and training settings
    # given by hand (None for "default", and for entries written before the values were recorded)
    settings_values: dict[str, Any] | None = None
    # the reference lock's digest when the run's packages were the lock's (results' run.environment);
    # None when they were not, or when the run did not record it
    environment: str | None = None


    def frame_run(self) -> FrameRun:
        return FrameRun(self.key.sequence, self.key.subset, self.key.model, self.key.method, self.key.protocol,
                        self.key.settings, self.seed, self.tasks, self.matrix, self.summary, self.trainable_params,
                        self.added_params, self.wall_seconds)


class Leaderboard(_Strict):
    leaderboard_version: Literal[3] = LEADERBOARD_VERSION
    entries: list[Entry] = Field(default_factory=list)

    def to_pandas(self) -> pd.DataFrame:
        """One row per entry and matrix cell (``results/frames.py``: CELL_COLUMNS)."""
        return cells_frame(entry.frame_run() for entry in self.entries)

    def runs_frame(self) -> pd.DataFrame:
        """One row per entry with its summary and cost (``results/frames.py``: RUN_COLUMNS)."""
        return runs_frame(entry.frame_run() for entry in self.entries)


def entry_from_results(results: Results, tier: Tier | None = None) -> Entry:
    sequence = results.run.sequence
    key = EntryKey(sequence=sequence_label(results), subset=sequence.subset,
                   content_hash=sequence.content_hash, model=results.run.model,
                   model_weights=results.run.model_weights, method=results.run.method, protocol=protocol_of(results),
                   settings=settings_of(results),
                   split=split_of(results))
    return Entry(key=key, seed=results.run.seed, tasks=results.tasks, matrix=results.matrix,
                 summary=results.summary, task_selection=results.stages[-1].task_selection,
                 trainable_params=max(results.cost.trainable_params_per_stage),
                 added_params=results.cost.added_params, wall_seconds=results.cost.wall_seconds,
                 harness_version=results.run.harness_version, commit=results.run.git.get("commit"),
                 device=results.run.device, tier=tier, settings_values=settings_values_of(results),
                 environment=results.run.environment.lock if results.run.environment is not None else None)


def read_leaderboard(path: Path) -> Leaderboard:
    """The leaderboard at ``path``; an absent file is an empty leaderboard."""
    path = Path(path)
    if not path.exists():
        return Leaderboard()
    data = read_bounded_json(path, "leaderboard")
    VERSION.require_current(data, str(path), "leaderboard")
    return validated(data, path)


def validated(data: dict[str, Any], path: Path) -> Leaderboard:
    try:
        return Leaderboard.model_validate(data)
    except ValidationError as error:
        field, message = first_problem(error)
        raise DataError(f"leaderboard {path}: field {field} is invalid ({message}); "
                        f"restore it from version control") from None


def _weights_unknown(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 keys did not name the model's weights: they become unknown (None)."""
    for entry in data.get("entries", []):
        if isinstance(entry, dict) and isinstance(entry.get("key"), dict):
            entry["key"].setdefault("model_weights", None)
    return data


def _tiers(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 entries said ``verified``: true meant re-scored from predictions whose references were
    not checked against the test split (self-checked), false a results file alone."""
    for entry in data.get("entries", []):
        if isinstance(entry, dict) and "verified" in entry:
            verified = entry.pop("verified")
            entry["tier"] = "self-checked" if verified is True else "unverified" if verified is False else None
    return data


VERSION = FileVersion("leaderboard_version", LEADERBOARD_VERSION, {1: _weights_unknown, 2: _tiers})


def convert_leaderboard(path: Path) -> int:
    """Rewrite a leaderboard of an older version as the current one; returns the version it had."""
    data, found = VERSION.upgraded(read_bounded_json(path, "leaderboard"), f"leaderboard {path}")
    write_leaderboard(validated(data, path), path)
    return found


def write_leaderboard(board: Leaderboard, path: Path) -> None:
    """The whole board, sorted, as strict JSON (no NaN or infinity can reach the file)."""
    entries = sorted(board.entries, key=lambda entry: (entry.key.sort_key(), entry.seed))
    atomic_write_json(Path(path), Leaderboard(entries=entries).model_dump(mode="json"), strict=True)


