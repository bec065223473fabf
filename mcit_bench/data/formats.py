"""Readers for the file formats real benchmarks publish (the arrow cache is ``splits.py``'s, the
official answer files ``answers.py``'s).

Containers: a JSON list, or JSONL (one JSON object a line; ``.jsonl`` files, or any file that is
not one JSON document but whose every line is one). Record formats:

* Conversations (training): ``{"id", "image"?, "conversations": [{"from": "human", "value":
  "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}``. LLaVA's dialect needs the image tag
  exactly where a record has an image (text-only ScienceQA items have neither, as CoIN's
  ``scripts/LLaVA/convert_sqa_to_llava.py`` writes them); InternVL's puts the tag first when it is
  missing (D-MoLE's ``internvl/train/dataset.py``, ``multi_modal_get_item``).
* Test records, by the task's ``test_format`` (``TEST_READERS``): CoIN/UCIT's ``{"question_id",
  "image"?, "text", "answer"}`` (grounding: ``answer_bbox`` and ``size``); D-MoLE's VQA, multiple
  choice and SK-VG lines, and COCO caption files whose images are the test split.

Every problem is reported as one sentence naming the file, the record (or line) and the field.
Just past 400 lines: each published layout's reader is short, and they share the container, image
and box checks above them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcit_bench.core.boxes import box_inside, box_limits
from mcit_bench.core.errors import DataError
from mcit_bench.core.records import IMAGE_TAG, Record

# 5: a CoIN-style record keeps MLLM-CL's evaluator fields and its task's prompt; 4: joined records name their
# answer file; 3: JSONL, D-MoLE's formats, boxes, extras
READER_VERSION = 5


@dataclass(frozen=True)
class Entry:
    """One record of a file and where it sits (``record 3`` of a JSON list, ``line 4`` of JSONL)."""

    where: str
    value: Any


def is_jsonl(path: Path) -> bool:
    return path.suffix == ".jsonl"


def _json_lines(path: Path, text: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(Entry(f"line {number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise DataError(f"data file {path} line {number} is not JSON ({error.msg}, column {error.colno}); "
                            f"fix or drop that line") from None
    return entries


def load_entries(path: Path) -> list[Entry]:
    """The records of a JSON list or JSONL file, each with its place in the file."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check --data-root or run 'mcit-bench data check'")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"data file {path} is not UTF-8 text; re-download it") from None
    if is_jsonl(path):
        return _json_lines(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        lines = [line for line in text.splitlines() if line.strip()]
        if error.msg == "Extra data" and len(lines) > 1:  # one object a line under another suffix
            return _json_lines(path, text)
        raise DataError(f"data file {path} is neither a JSON list nor JSONL (line {error.lineno}, column "
                        f"{error.colno}: {error.msg}); fix or re-download it") from None
    if not isinstance(data, list):
        raise DataError(f"data file {path} must hold a JSON list of records (or one JSON object a line), "
                        f"found {type(data).__name__}")
    return [Entry(f"record {index}", value) for index, value in enumerate(data)]


def _require(path: Path, entry: Entry, key: str, kind: type | tuple[type, ...]) -> Any:
    value = entry.value
    if not isinstance(value, dict):
        raise DataError(f"{path}: {entry.where} is a {type(value).__name__}, not an object; "
                        f"each record must be a JSON object")
    label = value.get("id", value.get("question_id", "none"))
    if key not in value:
        raise DataError(f"{path}: {entry.where} (id {label!r}) has no field {key!r}; add it or drop the record")
    found = value[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(found, kinds) or (isinstance(found, bool) and bool not in kinds):  # JSON true is no number
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {entry.where} (id {label!r}) field {key!r} must be {names}, "
                        f"found {type(found).__name__}")
    return found


@dataclass(frozen=True)
class ImagePlace:
    """Where a split's image paths are resolved (``folder``) and the data root they must stay under."""

    folder: Path
    root: Path

    def path_of(self, where: str, image: str) -> str:
        """The image's path, refused when it would leave the data root (``..``, an absolute path)."""
        full = os.path.normpath(self.folder / image)
        root = os.path.normpath(self.root)
        if os.path.isabs(image) or os.path.commonpath([full, root]) != root:
            raise DataError(f"{where}: image path {image!r} leads outside the data root {self.root}; "
                            f"image paths must be relative to {self.folder}")
        return full


def _image(path: Path, entry: Entry, place: ImagePlace, required: bool = True) -> str:
    """The record's image path, or "" for a text-only record (no ``image`` field, where allowed)."""
    if not required and "image" not in entry.value:
        return ""
    return place.path_of(f"{path}: {entry.where}", _require(path, entry, "image", str))


def _each_entry(path: Path, parse: Callable[[Entry], list[Record]], problems: list[str] | None) -> list[Record]:
    """Parse every entry of a file; with a ``problems`` list, a bad entry is noted there and skipped
    (so 'data check' reports them all), otherwise its error is raised at once."""
    records: list[Record] = []
    for entry in load_entries(path):
        try:
            records.extend(parse(entry))
        except DataError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return records


def read_llava_conversations(path: Path, image_root: Path, task_type: str, problems: list[str] | None = None,
                             dialect: str = "llava", data_root: Path | None = None) -> list[Record]:
    """Training records from conversations; each human/gpt pair becomes one record."""
    place = ImagePlace(image_root, data_root or image_root)
    return _each_entry(path, lambda entry: _conversation_records(path, place, task_type, entry, dialect), problems)


def _conversation_records(path: Path, place: ImagePlace, task_type: str, entry: Entry, dialect: str) -> list[Record]:
    sample_id = str(_require(path, entry, "id", (str, int)))
    image = _image(path, entry, place, required=False)
    turns = _require(path, entry, "conversations", list)
    if len(turns) < 2 or len(turns) % 2:
        raise DataError(f"{path}: {entry.where} (id {sample_id!r}) field 'conversations' must alternate "
                        f"human and gpt turns, found {len(turns)} turns")
    records: list[Record] = []
    for turn_index in range(0, len(turns), 2):
        human, answer = turns[turn_index], turns[turn_index + 1]
        for position, (turn, speaker) in enumerate(((human, "human"), (answer, "gpt"))):
            if not isinstance(turn, dict) or turn.get("from") != speaker or not isinstance(turn.get("value"), str):
                raise DataError(f"{path}: {entry.where} (id {sample_id!r}) turn {turn_index + position} must be "
                                f"{{'from': '{speaker}', 'value': text}}")
        question = human["value"]
        tags = question.count(IMAGE_TAG)
        expected = 1 if turn_index == 0 and image else 0
        tag_optional = dialect == "internvl" and expected == 1  # InternVL prepends a missing tag
        if tags != expected and not (tag_optional and tags == 0):
            where = "the first human turn" if turn_index == 0 else f"human turn {turn_index}"
            why = "" if image else " (the record has no 'image': a text-only record has no tag)"
            raise DataError(f"{path}: {entry.where} (id {sample_id!r}) has {tags} '{IMAGE_TAG}' tags in {where}; "
                            f"exactly {expected} expected{why}")
        instruction = question.replace(IMAGE_TAG, "").strip("\n ")
        suffix = "" if turn_index == 0 else f"#{turn_index // 2}"
        records.append(Record(f"{sample_id}{suffix}", image, instruction, (answer["value"],), task_type))
    return records


# ------------------------------------------------------------------------------------------ boxes
def format_box(box: list[float], convention: str) -> str:
    """A box as the task's answers write it: 0-1 with two decimals, pixels, or InternVL's ``[[...]]`` in 0-1000."""
    if convention == "thousand":
        return "[[" + ", ".join(str(round(v)) for v in box) + "]]"
    if convention == "pixel":
        return "[" + ", ".join(f"{v:g}" for v in box) + "]"
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def _box_values(path: Path, entry: Entry, key: str) -> list[float]:
    raw = _require(path, entry, key, (str, list))
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        values = [float(v) for v in text.replace("[", "").replace("]", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise DataError(f"{path}: {entry.where} field {key!r} must be four numbers [x1, y1, x2, y2], found {raw!r}")
    return values


def _image_size(path: Path, entry: Entry, keys: tuple[str, str] | str) -> tuple[float, float]:
    if isinstance(keys, str):
        size = _require(path, entry, keys, list)
        if len(size) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in size):
            raise DataError(f"{path}: {entry.where} field {keys!r} must be [width, height], found {size!r}")
        return float(size[0]), float(size[1])
    width, height = (_require(path, entry, key, (int, float)) for key in keys)
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: {entry.where} fields {keys[0]!r} and {keys[1]!r} must be positive")
    return float(width), float(height)


def _checked_box(path: Path, entry: Entry, box: list[float], convention: str, size: tuple[float, float]) -> None:
    if not box_inside(box, convention, size):
        limits = box_limits(convention, size)
        raise DataError(f"{path}: {entry.where} box {box} is not inside its image (0 <= x1 < x2 <= {limits[0]:g}, "
                        f"0 <= y1 < y2 <= {limits[1]:g} in the task's '{convention}' convention); fix the box or "
                        f"the task's 'boxes'")


# ------------------------------------------------------------------------------------------ test records
@dataclass(frozen=True)
class TestFormat:
    """How a test split is read: the task's type, box convention and the prompt its source appends."""

    task_type: str
    boxes: str = "padded_square"
    prompt: str | None = None


def _coin_test_record(path: Path, place: ImagePlace, form: TestFormat, entry: Entry) -> Record:
    question_id = str(_require(path, entry, "question_id", (str, int)))
    image = _image(path, entry, place, required=False)
    text = _require(path, entry, "text", str)
    if text.count(IMAGE_TAG) > (1 if image else 0):
        raise DataError(f"{path}: {entry.where} (id {question_id!r}) field 'text' has "
                        f"{text.count(IMAGE_TAG)} '{IMAGE_TAG}' tags; at most {1 if image else 0} expected")
    metadata: dict[str, Any] = {}
    if form.task_type == "grounding":  # the reference is the box alone (CoIN's grounding tests carry no 'answer')
        box = _box_values(path, entry, "answer_bbox")
        size = _image_size(path, entry, "size")
        _checked_box(path, entry, box, form.boxes, size)
        metadata.update(size=list(size), box=box, boxes=form.boxes)
        raw = entry.value["answer_bbox"]
        answers = [raw if isinstance(raw, str) else format_box(box, form.boxes)]
    elif "answers" in entry.value:
        answers = _require(path, entry, "answers", list)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{path}: {entry.where} (id {question_id!r}) field 'answers' must be a "
                            f"non-empty list of strings")
    else:
        answer = _require(path, entry, "answer", (str, list))
        answers = [answer] if isinstance(answer, str) else answer
    if "options" in entry.value:
        metadata["options"] = _require(path, entry, "options", list)
    for key in EVALUATOR_FIELDS:
        if key in entry.value:
            metadata[key] = _require(path, entry, key, str)
    instruction = _with_prompt(text.replace(IMAGE_TAG, "").strip("\n "), form.prompt, " ")
    return Record(question_id, image, instruction, tuple(answers), form.task_type, metadata)


# what MLLM-CL's evaluators read of a test record beyond its answer: OCRBench's category
# (eval_ocr.py, annotation['answer_type']) and CV-Bench's dimension and task (eval_sat.py)
EVALUATOR_FIELDS = ("answer_type", "type", "task")
# MLLM-CL's finance inference (ETrain/Eval/LLaVA/CoIN/model_fin.py lines 43-47) picks the prompt by the
# answer it is about to be scored against: the yes/no prompt for a Yes or No answer, else the letter one
FIN_YES_NO_PROMPT = "Only answer with yes or no directly."
FIN_LETTER_PROMPT = "Answer with the given letter directly, e.g., A, B, C, D."


def _mllm_cl_fin_record(path: Path, place: ImagePlace, form: TestFormat, entry: Entry) -> Record:
    """A CoIN-style record whose prompt depends on its answer, as MLLM-CL's finance inference builds it."""
    answer = _require(path, entry, "answer", str)
    prompt = FIN_YES_NO_PROMPT if answer in ("Yes", "No") else FIN_LETTER_PROMPT
    return _coin_test_record(path, place, TestFormat(form.task_type, form.boxes, prompt), entry)


def _with_prompt(question: str, prompt: str | None, separator: str) -> str:
    return question + separator + prompt if prompt else question


def _dmole_vqa_record(path: Path, place: ImagePlace, form: TestFormat, entry: Entry) -> Record:
    """D-MoLE's VQA lines (``eval/vqa/evaluate_vqa.py``, ``VQADataset``): the question, a space, the prompt."""
    question_id = str(_require(path, entry, "question_id", (str, int)))
    # the answer may be absent where an annotation file holds them (D-MoLE's VizWiz: data.get("answer"))
    answer = _require(path, entry, "answer", (str, list)) if "answer" in entry.value else []
    answers = [answer] if isinstance(answer, str) else answer
    if not all(isinstance(a, str) for a in answers):
        raise DataError(f"{path}: {entry.where} (id {question_id!r}) field 'answer' must be text or a "
                        f"non-empty list of texts")
    instruction = _with_prompt(_require(path, entry, "question", str), form.prompt, " ")
    return Record(question_id, _image(path, entry, place), instruction, tuple(answers), form.task_type)


OPTION_LETTERS = "ABCDE"  # D-MoLE's multiple_choices list


def _dmole_choice_record(path: Path, place: ImagePlace, form: TestFormat, entry: Entry) -> Record:
    """D-MoLE's multiple-choice lines (``eval/vqa/evaluate_multi_choice.py``, ``MultiChoiceQADataset``):
    the question, then ``A. choice`` lines, then the prompt, each on its own line; the answer is an index."""
    choices = _require(path, entry, "choices", list)
    answer = _require(path, entry, "answer", int)
    label = entry.value.get("question_id", entry.where)
    if not 2 <= len(choices) <= len(OPTION_LETTERS) or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{path}: {entry.where} field 'choices' must hold 2 to {len(OPTION_LETTERS)} texts")
    if not 0 <= answer < len(choices):
        raise DataError(f"{path}: {entry.where} field 'answer' is {answer}, not an index into its "
                        f"{len(choices)} choices")
    listed = "\n".join(f"{OPTION_LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    instruction = _with_prompt(_require(path, entry, "question", str) + "\n" + listed, form.prompt, "\n")
    return Record(str(label), _image(path, entry, place), instruction, (OPTION_LETTERS[answer],), form.task_type,
                  {"options": choices})


SKVG_PROMPT = ("Based on the knowledge {knowledge}.\nPlease provide the bounding box coordinate of the region "
               "this sentence describes: <ref>{sentence}</ref>")  # eval/refcoco/evaluate_grounding.py, skvg_test


def _dmole_grounding_record(path: Path, place: ImagePlace, form: TestFormat, entry: Entry) -> Record:
    """SK-VG's lines: a sentence, the knowledge it needs, the box in pixels and the image's size."""
    sentence = _require(path, entry, "sent", str)
    knowledge = _require(path, entry, "knowledge", str)
    size = _image_size(path, entry, ("width", "height"))
    box = _box_values(path, entry, "bbox")
    _checked_box(path, entry, box, "pixel", size)
    frame = to_convention(box, "pixel", form.boxes, size)
    label = entry.value.get("question_id", entry.value.get("id", entry.where))
    return Record(str(label), _image(path, entry, place), SKVG_PROMPT.format(knowledge=knowledge, sentence=sentence),
                  (format_box(frame, form.boxes),), form.task_type,
                  {"size": list(size), "box": frame, "boxes": form.boxes, "pixel_box": box})


def to_convention(box: list[float], source: str, target: str, size: tuple[float, float]) -> list[float]:
    """A box moved between conventions of one image (the padded square is centred on the image)."""
    width, height = size
    side = max(width, height)
    offset_x, offset_y = (side - width) / 2, (side - height) / 2
    x1, y1, x2, y2 = box
    if source == "thousand":
        x1, x2, y1, y2 = x1 * width / 1000, x2 * width / 1000, y1 * height / 1000, y2 * height / 1000
    elif source == "padded_square":
        x1, x2, y1, y2 = x1 * side - offset_x, x2 * side - offset_x, y1 * side - offset_y, y2 * side - offset_y
    if target == "thousand":
        return [x1 * 1000 / width, y1 * 1000 / height, x2 * 1000 / width, y2 * 1000 / height]
    if target == "padded_square":
        return [(x1 + offset_x) / side, (y1 + offset_y) / side, (x2 + offset_x) / side, (y2 + offset_y) / side]
    return [x1, y1, x2, y2]


CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # eval/caption/evaluate_caption.py


def read_json_object(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; get it where 'mcit-bench data check' says, "
                        f"or drop it from the task")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{what} {path} is not valid JSON ({error}); re-download it") from None


def read_coco_caption_test(path: Path, place: ImagePlace, form: TestFormat,
                           problems: list[str] | None = None) -> list[Record]:
    """A COCO caption file as a test split (D-MoLE's captions): each image of ``images`` is a record,
    its captions from ``annotations`` by image id are the references."""
    raw = read_json_object(path, "COCO caption file")
    try:
        repeated = repeated_ids(int(item["id"]) for item in raw["images"])
        if repeated:
            raise DataError(f"{path} lists image id {repeated[0]} more than once in 'images' ({len(repeated)} ids "
                            f"repeat); which captions belong to which would be a guess: use a clean copy")
        images = {int(item["id"]): item.get("file_name", item.get("image")) for item in raw["images"]}
        captions: dict[int, list[str]] = {}
        for item in raw["annotations"]:
            captions.setdefault(int(item["image_id"]), []).append(str(item["caption"]))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is not a COCO caption file (no valid {error} in 'images' or 'annotations'); "
                        f"it needs images [{{id, file_name}}] and annotations [{{image_id, caption}}]") from None
    found: list[str] = []
    unknown = sorted(set(captions) - set(images))
    if unknown:
        found.append(f"{path}: {len(unknown)} captions name image ids absent from 'images' (first: {unknown[0]}); "
                     f"use the caption file of the same split")
    records = []
    for image_id, name in images.items():
        try:
            if not isinstance(name, str):
                raise DataError(f"{path}: image id {image_id} has no 'file_name'; add the file name")
            if image_id not in captions:
                raise DataError(f"{path}: image id {image_id} has no caption; drop the image or restore its captions")
            records.append(Record(str(image_id), place.path_of(f"{path}: image id {image_id}", name),
                                  form.prompt or CAPTION_PROMPT, tuple(captions[image_id]), form.task_type))
        except DataError as error:
            found.append(str(error))
    report_problems(found, problems)
    return records


def repeated_ids(ids: Iterable[Any]) -> list[Any]:
    """The ids that occur more than once, sorted."""
    return sorted(key for key, count in Counter(ids).items() if count > 1)


def report_problems(found: list[str], problems: list[str] | None) -> None:
    if found and problems is None:
        raise DataError(found[0])
    if problems is not None:
        problems.extend(found)


RecordReader = Callable[[Path, ImagePlace, TestFormat, Entry], Record]
TEST_READERS: dict[str, RecordReader] = {
    "coin": _coin_test_record,
    "dmole_vqa": _dmole_vqa_record,
    "dmole_choice": _dmole_choice_record,
    "dmole_grounding": _dmole_grounding_record,
    "mllm_cl_fin": _mllm_cl_fin_record,
}


def read_test(path: Path, place: ImagePlace, form: TestFormat, test_format: str = "coin",
              problems: list[str] | None = None) -> list[Record]:
    """Test records of a split in its source's format."""
    if test_format == "coco_caption":
        return read_coco_caption_test(path, place, form, problems)
    reader = TEST_READERS[test_format]
    records = _each_entry(path, lambda entry: [reader(path, place, form, entry)], problems)
    repeated = repeated_ids(record.id for record in records)
    if repeated:
        report_problems([f"{path}: question id {repeated[0]!r} is used by several records "
                         f"({len(repeated)} ids repeat); "
                 f"every test record needs its own id"], problems)
    return records


def read_coin_test(path: Path, image_root: Path, task_type: str, problems: list[str] | None = None) -> list[Record]:
    """Test records from CoIN-style JSON (``question_id``, ``image``, ``text``, ``answer``)."""
    return read_test(path, ImagePlace(image_root, image_root), TestFormat(task_type), "coin", problems)
