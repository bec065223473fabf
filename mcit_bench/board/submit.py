"""Submitting runs to the leaderboard: what a run must pass before it becomes an entry.

``submit`` accepts a run only when its results validate, its summary is what its matrix gives, the
run finished, its sequence is a known one with the same content hash, a run on the packaged
mcit-tiny used the weights shipped with this version, and its (key, seed) is not there yet. Each
entry records how far it was proven (its tier, ``proven_tier``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcit_bench.board.leaderboard import Entry, Tier, entry_from_results, read_leaderboard, write_leaderboard
from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.core.io import exclusive_lock, weights_fingerprint
from mcit_bench.core.shipped import TINY_NAME, packaged_tiny_folder
from mcit_bench.data.stream import load_stream
from mcit_bench.results.document import Results, load_results
from mcit_bench.results.identity import split_of
from mcit_bench.rundir import PREDICTIONS, predictions_files


def non_finite_fields(value: Any, where: str) -> list[str]:
    """The places in a decoded JSON value that hold NaN or an infinity, as ``matrix[1][2]``-style paths."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where} ({value})"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in non_finite_fields(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in non_finite_fields(item, f"{where}[{index}]")]
    return []


# What a name shown in every format may hold: no markup, formula or path trickery can pass it.
METHOD_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./\-]{0,199}$")


def verify_names(results: Results, source: str) -> None:
    """Method and model names in the registry's charset, the method a registered one (known by name,
    without loading the plugins and torch with them)."""
    from mcit_bench.methods.registry import METHODS

    method, model = results.run.method, results.run.model
    if not METHOD_NAME.match(method):
        raise DataError(f"{source}: method name {method!r} is not a method name (lower-case letters, digits, "
                        f"'_', '-' and '.'); register the method under such a name")
    if method not in METHODS.declared_names():
        raise DataError(f"{source}: method {method!r} is not registered here; install the package that declares "
                        f"it (entry point group mcit_bench.methods) before submitting")
    if not MODEL_NAME.match(model):
        raise DataError(f"{source}: model name {model!r} holds characters a model id does not (letters, digits, "
                        f"'_', '.', '-', '/'); name the model by its Hugging Face id")


def verify_consistent(results: Results, source: str) -> None:
    """Refuse an unfinished run, one with a number that is not finite, or one whose summary is not
    what its matrix gives."""
    found = [place for name in ("matrix", "summary", "cost", "stages", "extra_scores", "as_published")
             for place in non_finite_fields(results.model_dump(mode="python")[name], name)]
    if found:
        raise DataError(f"{source}: field {found[0]} is not a finite number"
                        + (f" ({len(found) - 1} more)" if len(found) > 1 else "")
                        + "; a finished run has finite scores and costs: rerun or re-score it")
    if len(results.stages) < 1 or not results.run.upper_bound and (
            sum(len(stage.tasks) for stage in results.stages) != len(results.tasks)):
        raise DataError(f"{source}: the run trained {sum(len(s.tasks) for s in results.stages)} of "
                        f"{len(results.tasks)} tasks; finish it with --resume before submitting")
    wrong = results.summary_mismatches()
    if wrong:
        raise DataError(f"{source}: the summary does not match the matrix ({'; '.join(wrong)}); "
                        f"recompute it with 'mcit-bench score RUN_DIR'")


def verify_submission(results: Results, source: str) -> None:
    """Refuse a results document whose numbers or identity cannot be trusted."""
    verify_consistent(results, source)
    verify_names(results, source)
    if split_of(results) == "validation":
        raise DataError(f"{source}: this run (a tuning trial, or a run config with 'validation') is scored on a "
                        f"validation split carved from the training data; submit a run of the same settings on the "
                        f"test split ('mcit-bench run --tuned tuning.json', or the config without 'validation')")
    sequence = results.run.sequence
    try:
        version, content_hash = shipped_sequence(sequence.name, sequence.subset, sequence.variant)
    except ConfigError:
        raise DataError(f"{source}: sequence {sequence.name!r} (subset {sequence.subset!r}) is not one this "
                        f"mcit-bench ships; only built-in sequences go on the leaderboard") from None
    if (version, content_hash) != (sequence.version, sequence.content_hash):
        raise DataError(f"{source}: sequence {sequence.name}@{sequence.version} with content hash "
                        f"{sequence.content_hash[:12]} is not the shipped {sequence.name}@{version} "
                        f"({content_hash[:12]}); rerun on the current sequence")
    expected = shipped_tasks(sequence.name, sequence.subset, sequence.variant)
    if results.tasks != expected:
        raise DataError(f"{source}: tasks {results.tasks} are not {sequence.name}'s own ({expected}); "
                        f"a results file must name the tasks of the sequence it ran")
    if results.run.model == TINY_NAME and results.run.model_weights != shipped_tiny_weights():
        ran_on = results.run.model_weights[:12] if results.run.model_weights else "weights it did not record"
        raise DataError(f"{source}: the run used {TINY_NAME} with {ran_on}, not the weights this mcit-bench "
                        f"ships ({shipped_tiny_weights()[:12]}); rerun with this version")


@functools.lru_cache(maxsize=1)
def shipped_tiny_weights() -> str:
    return weights_fingerprint(packaged_tiny_folder())


@functools.lru_cache(maxsize=64)
def shipped_sequence(name: str, subset: str | None, variant: str | None = None) -> tuple[int, str]:
    """(version, content hash) of a built-in sequence; a custom YAML path is not a shipped one."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        raise ConfigError(f"{name} is a file, not a built-in sequence")
    stream = load_stream(name, subset, variant)
    return stream.version, stream.content_hash()


@functools.lru_cache(maxsize=64)
def shipped_tasks(name: str, subset: str | None, variant: str | None = None) -> list[str]:
    return load_stream(name, subset, variant).task_names


@dataclass(frozen=True)
class Proof:
    """What a submission may be proven with: the published data (``data_root``; a synthetic stream's is
    generated under ``cache_root``) and ``reproduce(results, run_dir)``, which trains the run again and
    raises DataError naming the first prediction that differs (the engine's, handed in by the CLI)."""

    data_root: Path | None = None
    cache_root: Path | None = None
    reproduce: Callable[[Results, Path], None] | None = None


def proven_tier(results: Results, path: Path, proof: Proof) -> Tier:
    """How far a submission can be proven (``leaderboard.Tier``), each step refusing what it disproves:
    a results file alone is ``unverified``; a run directory's matrix is re-scored from its predictions
    (``self-checked``), whose ids, count and references are then set beside the stream's own test split
    (``verified``; a published stream needs ``data_root``), and with ``reproduce`` the recorded config
    and seed are trained again and must give the same predictions (``reproduced``)."""
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / PREDICTIONS).is_dir():
        if proof.reproduce is not None:
            raise DataError(f"{path}: --reproduce needs the run directory (its predictions/ and config), not a "
                            f"results file alone; submit the run directory")
        return "unverified"
    from mcit_bench.results.scoring import check_against_predictions  # harness code, loaded only for run directories

    check_against_predictions(results, run_dir, str(path))
    if not check_against_test_split(results, run_dir, proof, str(path)):
        if proof.reproduce is not None:
            raise DataError(f"{path}: --reproduce trains the run again and needs its data; pass --data-root")
        return "self-checked"
    if proof.reproduce is None:
        return "verified"
    proof.reproduce(results, run_dir)
    return "reproduced"


def check_against_test_split(results: Results, run_dir: Path, proof: Proof, source: str) -> bool:
    """Refuse predictions that do not answer the stream's own test split, line for line: the same
    question ids in the same order, the same count, and the references, task type and metadata the split
    holds (so a prediction file cannot bring its own answers). False when the split cannot be read
    here (a published stream without ``proof.data_root``)."""
    from mcit_bench.data.prepare import default_cache_root, test_references

    config = results.run.config
    stream = load_stream(config.sequence, config.subset, config.variant)
    if stream.content_hash() != results.run.sequence.content_hash:
        raise DataError(f"{source}: the run's sequence {config.sequence!r} has content hash "
                        f"{results.run.sequence.content_hash[:12]}, not this version's {stream.content_hash()[:12]}; "
                        f"rerun on the current sequence")
    try:
        references = test_references(stream, proof.data_root, proof.cache_root or default_cache_root())
    except ConfigError:
        return False
    for path in predictions_files(run_dir):
        task = path.stem  # predictions/stage{i}/{task}.jsonl
        expected = references.get(task)
        if expected is None:
            raise DataError(f"{source}: predictions file {path} answers task {task!r}, which the sequence does not "
                            f"have; submit the run directory as the run wrote it")
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if len(lines) != len(expected):
            raise DataError(f"{source}: predictions file {path} has {len(lines)} answers and the test split of "
                            f"{task} has {len(expected)} samples; submit the predictions the run wrote")
        for number, (line, reference) in enumerate(zip(lines, expected), start=1):
            found = json.loads(line)  # read_predictions parsed every line when the matrix was re-scored
            differs = next((name for name in reference if found.get(name) != reference[name]), None)
            if differs is not None:
                raise DataError(f"{source}: predictions file {path} line {number} has {differs} "
                                f"{str(found.get(differs))[:80]!r}, not the test split's "
                                f"{str(reference[differs])[:80]!r}; submit the predictions the run wrote")
    return True


def verified_entries(results_paths: list[Path], proof: Proof) -> list[tuple[Path, Entry]]:
    """Every run checked and proven as far as it can be, before the leaderboard is locked."""
    entries = []
    for path in results_paths:
        results = load_results(path)
        verify_submission(results, str(path))
        entries.append((path, entry_from_results(results, tier=proven_tier(results, path, proof))))
    return entries


def submit_all(results_paths: Iterable[Path], leaderboard_path: Path, replace: bool = False,
               proof: Proof = Proof()) -> list[Entry]:
    """Verify runs and add them to the leaderboard in one write; the file is untouched unless all pass.

    An entry of the same key and seed is refused, or with ``replace`` swapped for the new run (a rerun
    after a fix to the method); two submitted runs of one key and seed are always refused.

    The runs are proven first (``proven_tier``: with ``proof.reproduce``, minutes each); the read, the
    identity checks and the write then happen under an exclusive lock on the leaderboard file, so
    concurrent submits queue instead of overwriting each other's entries.
    """
    entries = verified_entries([Path(path) for path in results_paths], proof)
    with exclusive_lock(leaderboard_path):
        return _add_locked(entries, Path(leaderboard_path), replace)


def _identity(entry: Entry) -> tuple[str, int]:
    return entry.key.model_dump_json(), entry.seed


def _add_locked(submitted: list[tuple[Path, Entry]], leaderboard_path: Path, replace: bool) -> list[Entry]:
    board = read_leaderboard(leaderboard_path)
    taken = set() if replace else {_identity(entry) for entry in board.entries}
    for path, entry in submitted:
        identity = _identity(entry)
        if identity in taken:
            where = "these submissions have" if replace else "the leaderboard already has"
            raise DataError(f"{path}: {where} {entry.key.label()} seed {entry.seed}; submit another seed"
                            + ("" if replace else ", or pass --replace to swap the old entry for this run"))
        taken.add(identity)
    entries = [entry for _, entry in submitted]
    new = {_identity(entry) for entry in entries}
    board.entries = [entry for entry in board.entries if _identity(entry) not in new] + entries
    write_leaderboard(board, leaderboard_path)
    return entries
