"""Every file the CLI reads, fuzzed (issue 30): results.json (score, submit, check), leaderboard.json,
a run directory's config.json and progress.json, a predictions file, a sequence YAML, a search space
and tuning.json. Whatever a file holds (JSON or YAML of generated structures with the fields the
readers expect, NaN and huge numbers, deep nesting, markup in names, or raw bytes), its reader returns
or refuses in one sentence (a ``UserError``), never another exception. Fixed seeds and budgets keep
it bounded in CI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mcit_bench.board.leaderboard import read_leaderboard
from mcit_bench.core.errors import UserError
from mcit_bench.data.stream import load_stream
from mcit_bench.results.document import load_results
from mcit_bench.rundir import read_predictions, read_run_json
from mcit_bench.tune import read_space_file, read_tuning
from tests.conftest import fuzz_settings

KEYS = ["schema_version", "leaderboard_version", "entries", "key", "matrix", "summary", "tasks", "run", "config",
        "method", "sequence", "seed", "stages", "cost", "task_info", "prediction_digests", "question_id", "text",
        "answer", "name", "version", "source", "kind", "tasks", "type", "train", "test", "steps_per_task",
        "study", "identity", "budget", "trials", "best", "params", "value", "number", "log", "range", "choices",
        "training.lr", "final_acc", "bwt", "verified", "[b]x[/b]"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                    st.sampled_from(["synth-coin@1", "seqft", "vqa", "synthetic", "files", "imagenet"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=15)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=7)


def as_json(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python writes them: not JSON, often met


def as_yaml(value) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


def as_jsonl(value) -> bytes:
    rows = value if isinstance(value, list) else [value]
    return b"\n".join(json.dumps(row).encode() for row in rows)


def deep(levels: int = 20_000) -> bytes:
    return b"[" * levels + b"]" * levels


READERS: dict[str, tuple[str, Callable[[Path], object], Callable[[object], bytes]]] = {
    "results": ("results.json", load_results, as_json),
    "leaderboard": ("leaderboard.json", read_leaderboard, as_json),
    "config": ("config.json", lambda path: read_run_json(path, "pass --overwrite"), as_json),
    "predictions": ("imagenet.jsonl", read_predictions, as_jsonl),
    "sequence": ("stream.yaml", lambda path: load_stream(str(path)), as_yaml),
    "space": ("space.yaml", read_space_file, as_yaml),
    "tuning": ("tuning.json", read_tuning, as_json),
}


def refuses_or_reads(reader: Callable[[Path], object], path: Path) -> None:
    try:
        reader(path)
    except UserError as error:
        text = str(error)
        assert text and "\n" not in text and "Traceback" not in text, text


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_file_nested_twenty_thousand_deep_is_refused_in_one_sentence(tmp_path, kind):
    name, reader, _ = READERS[kind]
    path = tmp_path / name
    path.write_bytes(deep())
    refuses_or_reads(reader, path)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_any_structure_in_a_file_is_read_or_refused_in_one_sentence(tmp_path_factory, kind):
    name, reader, encode = READERS[kind]

    @fuzz_settings(120)
    @given(st.one_of(DOCUMENTS, VALUES))
    def check(document):
        path = tmp_path_factory.mktemp(kind) / name
        path.write_bytes(encode(document))
        refuses_or_reads(reader, path)

    check()


@pytest.mark.parametrize("kind", sorted(READERS))
def test_any_bytes_in_a_file_are_read_or_refused_in_one_sentence(tmp_path_factory, kind):
    name, reader, _ = READERS[kind]

    @fuzz_settings(80)
    @given(st.binary(max_size=120))
    def check(data):
        path = tmp_path_factory.mktemp(kind) / name
        path.write_bytes(data)
        refuses_or_reads(reader, path)

    check()
