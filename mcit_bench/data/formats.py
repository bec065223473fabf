"""Readers for the file formats real benchmarks publish, and the arrow cache behind them.

* LLaVA conversation JSON (training): ``[{"id", "image", "conversations": [{"from": "human",
  "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}]``.
* CoIN-style test JSON: ``[{"question_id", "image", "text", "answer"}]``; grounding adds
  ``answer_bbox`` and ``size``; optional ``answers`` (every annotator's answer) and ``options``.

Every problem is reported as one sentence naming the file, the record and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcit_bench.data.records import IMAGE_TAG, Record
from mcit_bench.errors import DataError

READER_VERSION = 2  # 2: official answer files joined, annotator count checked


def _load_json_list(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check --data-root or run 'mcit-bench data check'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"data file {path} is not valid JSON (line {error.lineno}, column {error.colno}: "
                        f"{error.msg}); fix or re-download it") from None
    except UnicodeDecodeError:
        raise DataError(f"data file {path} is not UTF-8 text; re-download it") from None
    if not isinstance(data, list):
        raise DataError(f"data file {path} must hold a JSON list of records, found {type(data).__name__}")
    return data


def _require(path: Path, index: int, entry: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: record {index} is a {type(entry).__name__}, not an object; "
                        f"each record must be a JSON object")
    label = entry.get("id", entry.get("question_id", index))
    if key not in entry:
        raise DataError(f"{path}: record {index} (id {label!r}) has no field {key!r}; add it or drop the record")
    value = entry[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: record {index} (id {label!r}) field {key!r} must be {names}, "
                        f"found {type(value).__name__}")
    return value


def _each_entry(path: Path, parse, problems: list[str] | None) -> list[Record]:
    """Parse every entry of a JSON list file; with a ``problems`` list, a bad entry is noted there
    and skipped (so 'data check' reports them all), otherwise its error is raised at once."""
    records: list[Record] = []
    for index, entry in enumerate(_load_json_list(path)):
        try:
            records.extend(parse(index, entry))
        except DataError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return records


def read_llava_conversations(path: Path, image_root: Path, task_type: str,
                             problems: list[str] | None = None) -> list[Record]:
    """Training records from LLaVA conversation JSON; each human/gpt pair becomes one record."""
    return _each_entry(path, lambda index, entry: _conversation_records(path, image_root, task_type, index, entry),
                       problems)


def _conversation_records(path: Path, image_root: Path, task_type: str, index: int, entry: Any) -> list[Record]:
    sample_id = str(_require(path, index, entry, "id", (str, int)))
    image = _require(path, index, entry, "image", str)
    turns = _require(path, index, entry, "conversations", list)
    if len(turns) < 2 or len(turns) % 2:
        raise DataError(f"{path}: record {index} (id {sample_id!r}) field 'conversations' must alternate "
                        f"human and gpt turns, found {len(turns)} turns")
    records: list[Record] = []
    for turn_index in range(0, len(turns), 2):
        human, answer = turns[turn_index], turns[turn_index + 1]
        for position, (turn, speaker) in enumerate(((human, "human"), (answer, "gpt"))):
            if not isinstance(turn, dict) or turn.get("from") != speaker or not isinstance(turn.get("value"), str):
                raise DataError(f"{path}: record {index} (id {sample_id!r}) turn {turn_index + position} must be "
                                f"{{'from': '{speaker}', 'value': text}}")
        question = human["value"]
        tags = question.count(IMAGE_TAG)
        expected = 1 if turn_index == 0 else 0
        if tags != expected:
            where = "the first human turn" if turn_index == 0 else f"human turn {turn_index}"
            raise DataError(f"{path}: record {index} (id {sample_id!r}) has {tags} '{IMAGE_TAG}' tags in {where}; "
                            f"exactly {expected} expected")
        instruction = question.replace(IMAGE_TAG, "").strip("\n ")
        suffix = "" if turn_index == 0 else f"#{turn_index // 2}"
        records.append(Record(f"{sample_id}{suffix}", str(image_root / image), instruction,
                              (answer["value"],), task_type))
    return records


def read_coin_test(path: Path, image_root: Path, task_type: str, problems: list[str] | None = None) -> list[Record]:
    """Test records from CoIN-style JSON (``question_id``, ``image``, ``text``, ``answer``)."""
    return _each_entry(path, lambda index, entry: [_test_record(path, image_root, task_type, index, entry)], problems)


def _test_record(path: Path, image_root: Path, task_type: str, index: int, entry: Any) -> Record:
    question_id = str(_require(path, index, entry, "question_id", (str, int)))
    image = _require(path, index, entry, "image", str)
    text = _require(path, index, entry, "text", str)
    if text.count(IMAGE_TAG) > 1:
        raise DataError(f"{path}: record {index} (id {question_id!r}) field 'text' has "
                        f"{text.count(IMAGE_TAG)} '{IMAGE_TAG}' tags; at most one expected")
    metadata: dict[str, Any] = {}
    if task_type == "grounding":  # the reference is the box alone (CoIN's grounding tests carry no 'answer')
        box = _require(path, index, entry, "answer_bbox", (str, list))
        metadata["size"] = _require(path, index, entry, "size", list)
        answers = [box if isinstance(box, str) else "[" + ", ".join(f"{v:.2f}" for v in box) + "]"]
    elif "answers" in entry:
        answers = _require(path, index, entry, "answers", list)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{path}: record {index} (id {question_id!r}) field 'answers' must be a "
                            f"non-empty list of strings")
    else:
        answer = _require(path, index, entry, "answer", (str, list))
        answers = [answer] if isinstance(answer, str) else answer
    if "options" in entry:
        metadata["options"] = _require(path, index, entry, "options", list)
    instruction = text.replace(IMAGE_TAG, "").strip("\n ")
    return Record(question_id, str(image_root / image), instruction, tuple(answers), task_type, metadata)


VQA_ANNOTATORS = 10


def require_annotators(records: list[Record], source: Path, problems: list[str] | None = None) -> None:
    """VQA accuracy averages over ten annotators; one reference is exact match. Any other count
    would score silently on a different scale, so it is refused."""
    for record in records:
        if record.task_type == "vqa" and len(record.answers) not in (1, VQA_ANNOTATORS):
            message = (f"{source}: record {record.id!r} has {len(record.answers)} annotator answers; the VQA accuracy "
                       f"needs all {VQA_ANNOTATORS} (or one, scored as exact match): restore the missing answers or "
                       f"join the official answer file through the task's 'annotations'")
            if problems is None:
                raise DataError(message)
            problems.append(message)


def read_annotations(path: Path, kind: str) -> dict[str, tuple[str, ...]]:
    """Every reference per key from an official answer file (see ``stream.Annotations``)."""
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; get it where 'mcit-bench data check' says, "
                        f"or drop the task's 'annotations'")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"annotation file {path} is not valid JSON ({error}); re-download it") from None
    try:
        if kind == "textvqa":
            return {str(item["question_id"]): tuple(item["answers"]) for item in raw["data"]}
        if kind == "vqav2":
            return {str(item["question_id"]): tuple(a["answer"] for a in item["answers"])
                    for item in raw["annotations"]}
        if kind == "vizwiz":
            return {Path(item["image"]).name: tuple(a["answer"] for a in item["answers"]) for item in raw}
        if kind == "coco_captions":
            captions: dict[str, list[str]] = {}
            for item in raw["annotations"]:
                captions.setdefault(str(item["image_id"]), []).append(item["caption"])
            return {key: tuple(value) for key, value in captions.items()}
    except (KeyError, TypeError) as error:
        raise DataError(f"annotation file {path} is not in the {kind!r} format (no {error} where expected); "
                        f"check the task's 'annotations.format'") from None
    raise ValueError(f"unknown annotation format {kind!r}")


def join_key(record: Record, kind: str) -> str:
    """VizWiz's answer file is keyed by image file name, every other format by question id."""
    return Path(record.image).name if kind == "vizwiz" else record.id


def join_annotations(records: list[Record], references: dict[str, tuple[str, ...]], kind: str, source: Path,
                     problems: list[str] | None = None) -> list[Record]:
    """The records with every reference from the official file in place of the test JSON's own."""
    missing = [record.id for record in records if join_key(record, kind) not in references]
    if missing:
        message = (f"{source}: {len(missing)} test records have no entry in the annotation file (first: "
                   f"{', '.join(missing[:3])}); use the annotation file of the same split")
        if problems is None:
            raise DataError(message)
        problems.append(message)
    return [replace(record, answers=references[join_key(record, kind)]) for record in records
            if join_key(record, kind) in references]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_dataset(records: list[Record], cache_dir: Path | None = None, key: str | None = None):
    """Records as a ``datasets.Dataset``; with a cache folder, saved as arrow and reloaded by ``key``."""
    import datasets

    datasets.disable_progress_bars()
    if cache_dir is None or key is None:
        return datasets.Dataset.from_list([record.to_row() for record in records])
    target = cache_dir / key
    if (target / "dataset_info.json").exists():
        return datasets.load_from_disk(str(target))
    cache_dir.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_list([record.to_row() for record in records])
    staging = Path(tempfile.mkdtemp(prefix=".arrow-", dir=cache_dir))
    try:
        dataset.save_to_disk(str(staging))
        try:
            os.replace(staging, target)
        except OSError:  # a concurrent writer got there first; its copy is as good as ours
            if not (target / "dataset_info.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))


@dataclass(frozen=True)
class AnswerFile:
    """An official answer file to join to a test split, and its format."""

    path: Path
    kind: str


def read_split(path: Path, image_root: Path, task_type: str, split: str, answer_file: AnswerFile | None = None,
               problems: list[str] | None = None) -> list[Record]:
    """One task split as records: the split's reader, the official answers joined, the annotator count checked.

    With a ``problems`` list every problem found is appended there and the readable records are
    returned; without one the first problem is raised.
    """
    if split == "train":  # the readers name a missing file themselves
        return read_llava_conversations(path, image_root, task_type, problems)
    records = read_coin_test(path, image_root, task_type, problems)
    if answer_file is not None:
        references = read_annotations(answer_file.path, answer_file.kind)
        records = join_annotations(records, references, answer_file.kind, path, problems)
    require_annotators(records, path, problems)
    return records


def load_split(path: Path, image_root: Path, task_type: str, split: str, cache_dir: Path | None,
               answer_file: AnswerFile | None = None):
    """Read one task split through the arrow cache (keyed by the files' content and the image root)."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check --data-root or run 'mcit-bench data check'")
    key_source = f"{READER_VERSION}|{split}|{task_type}|{image_root.resolve()}|{file_digest(path)}"
    if answer_file is not None and answer_file.path.is_file():
        key_source += f"|{answer_file.kind}|{file_digest(answer_file.path)}"
    key = hashlib.sha256(key_source.encode()).hexdigest()[:24]
    if cache_dir is not None and (cache_dir / key / "dataset_info.json").exists():
        return to_dataset([], cache_dir, key)
    return to_dataset(read_split(path, image_root, task_type, split, answer_file), cache_dir, key)


def row_to_record(row: dict[str, Any]) -> Record:
    """The record behind a dataset row (the inverse of ``Record.to_row``)."""
    return Record(row["id"], row["image"], row["instruction"], tuple(row["answers"]), row["task_type"],
                  json.loads(row["metadata"]))
