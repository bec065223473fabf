"""Official answer files joined to a test split: TextVQA's, VQAv2's and VizWiz's annotations and COCO's
captions, by question id, image or position, and the annotator count VQA accuracy needs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mcit_bench.core.errors import DataError
from mcit_bench.core.records import Record
from mcit_bench.data.formats import read_json_object, repeated_ids, report_problems

VQA_ANNOTATORS = 10


def require_annotators(records: list[Record], source: Path, problems: list[str] | None = None) -> None:
    """VQA accuracy averages over ten annotators; one reference is exact match. Any other count
    would score silently on a different scale, so it is refused."""
    for record in records:
        if record.task_type == "vqa" and len(record.answers) not in (1, VQA_ANNOTATORS):
            report_problems([f"{source}: record {record.id!r} has {len(record.answers)} annotator "
                             f"answers; the VQA accuracy "
                     f"needs all {VQA_ANNOTATORS} (or one, scored as exact match): restore the missing answers or "
                     f"join the official answer file through the task's 'annotations'"], problems)


def read_annotations(path: Path, kind: str) -> dict[str, tuple[str, ...]]:
    """Every reference per key from an official answer file (see ``stream.Annotations``)."""
    raw = read_json_object(path, "annotation file")
    try:
        if kind == "textvqa":
            return {str(item["question_id"]): tuple(item["answers"]) for item in raw["data"]}
        if kind == "vqav2":
            return {str(item["question_id"]): tuple(a["answer"] for a in item["answers"])
                    for item in raw["annotations"]}
        if kind == "vizwiz":
            return {Path(item["image"]).name: tuple(a["answer"] for a in item["answers"]) for item in raw}
        if kind == "coco_captions":
            repeated = repeated_ids(str(image["id"]) for image in raw.get("images", []))
            if repeated:
                raise DataError(f"annotation file {path} lists image id {repeated[0]} more than once in 'images' "
                                f"({len(repeated)} ids repeat); a join on it would be ambiguous: use a clean copy")
            return coco_caption_references(raw)
    except (KeyError, TypeError) as error:
        raise DataError(f"annotation file {path} is not in the {kind!r} format (no {error} where expected); "
                        f"check the task's 'annotations.format'") from None
    raise ValueError(f"unknown annotation format {kind!r}")


def coco_caption_references(raw: dict) -> dict[str, tuple[str, ...]]:
    """Captions per image id; where the file lists its images with file names, each id's captions
    also answer to ``file:<name>`` so a join can prove it pairs the right image."""
    captions: dict[str, list[str]] = {}
    for item in raw["annotations"]:
        captions.setdefault(str(item["image_id"]), []).append(item["caption"])
    references = {key: tuple(value) for key, value in captions.items()}
    for image in raw.get("images", []):
        name = image.get("file_name", image.get("image"))
        if isinstance(name, str):
            references[f"file:{str(image['id'])}"] = (Path(name).name,)
    return references


@dataclass(frozen=True)
class AnswerFile:
    """An official answer file to join to a test split, its format and its join rule."""

    path: Path
    kind: str
    join: str = "question_id"  # question_id, image or position


def join_annotations(records: list[Record], references: dict[str, tuple[str, ...]], answer_file: AnswerFile,
                     source: Path, problems: list[str] | None = None) -> list[Record]:
    """The records with every reference from the official file in place of the test file's own
    (which is kept as ``metadata['source_answer']`` for the as-published scoring); each record names
    the file its references came from (``metadata['references']``), which a source's rule may need."""
    if answer_file.join == "position":
        keys = position_keys(records, references, answer_file.path, source, problems)
    else:
        keys = [Path(r.image).name if answer_file.join == "image" else r.id for r in records]
    missing = [record.id for record, key in zip(records, keys) if key not in references]
    if missing:
        report_problems([f"{source}: {len(missing)} test records have no entry in the annotation "
                         f"file {answer_file.path} "
                 f"(first: {', '.join(missing[:3])}); use the annotation file of the same split"], problems)
    return [replace(record, answers=references[key],
                    metadata={**record.metadata, "references": answer_file.path.name,
                              **({"source_answer": record.target} if record.answers else {})})
            for record, key in zip(records, keys) if key in references]


def position_keys(records: list[Record], references: dict[str, tuple[str, ...]], path: Path, source: Path,
                  problems: list[str] | None) -> list[str]:
    """MCITlib's caption join (``eval_caption.py``, ``create_coco_type``): the k-th result is image id k.
    It is only used when provably right: the file's image ids are exactly 1..N for N test records,
    and, where the file names its images, the k-th names the k-th record's image."""
    ids = sorted(int(key) for key in references if not key.startswith("file:"))
    if ids != list(range(1, len(records) + 1)):
        report_problems([f"{path}: joining captions by position needs image ids 1..{len(records)} "
                         f"for the {len(records)} "
                 f"records of {source}, found {len(ids)} ids" + (f" from {ids[0]} to {ids[-1]}" if ids else "")
                 + "; use the caption file made from this test file"], problems)
        return ["" for _ in records]
    for number, record in enumerate(records, start=1):
        named = references.get(f"file:{number}")
        if named is not None and record.image and named[0] != Path(record.image).name:
            report_problems([f"{path}: image id {number} is {named[0]} but test record {number} ({record.id!r}) shows "
                     f"{Path(record.image).name}; the caption file does not follow the test file's order"], problems)
            return ["" for _ in records]
    return [str(number) for number in range(1, len(records) + 1)]
