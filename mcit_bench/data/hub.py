"""Tasks read from Hugging Face datasets in instruction form: a local parquet/arrow folder or a Hub
name already in the local cache, mapped column by column onto the unified record.

Images stored inside the dataset (the ``Image`` feature: decoded pictures or raw bytes) are written
once as PNG files under the cache, so a record keeps naming an image file like every other source.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from PIL import Image

from mcit_bench.core.errors import DataError
from mcit_bench.core.records import Record
from mcit_bench.data.splits import cached_dataset
from mcit_bench.data.stream import HubSource

HUB_READER_VERSION = 1


def open_split(source: HubSource, root: Path, split: str, cache_root: Path | None = None):
    """The ``datasets.Dataset`` of one split, read without touching the network."""
    import datasets
    import huggingface_hub.constants

    datasets.disable_progress_bars()
    # mcit-bench never downloads at run time: a Hub name is served from the local cache or not at all
    datasets.config.HF_DATASETS_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    location = root / source.dataset
    try:
        if (location / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(location))[split]
        if (location / "dataset_info.json").is_file() and (location / "state.json").is_file():
            return datasets.load_from_disk(str(location))
        if location.is_dir():  # parquet/arrow files: their prepared copy stays in our cache, not the user's
            cache_dir = str(cache_root / "hf-datasets") if cache_root is not None else None
            return datasets.load_dataset(str(location), split=split, cache_dir=cache_dir)
        return datasets.load_dataset(source.dataset, split=split)
    except (FileNotFoundError, KeyError, ValueError, ConnectionError, OSError) as error:
        raise DataError(f"Hugging Face dataset {source.dataset!r} split {split!r} cannot be read "
                        f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); put its files "
                        f"under --data-root or download it first (huggingface-cli download)") from None


def image_file(value: Any, folder: Path, sample_id: str, root: Path) -> str:
    """A file path for a dataset's image cell: a path as is, a picture or its bytes written once."""
    if isinstance(value, str):
        return str(root / value)
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        return str(root / value["path"])
    target = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", sample_id) + ".png")
    if not target.is_file():
        if isinstance(value, dict):
            import io

            value = Image.open(io.BytesIO(value["bytes"]))
        if not isinstance(value, Image.Image):
            raise DataError(f"sample {sample_id!r}: the image column holds {type(value).__name__}, not an image, "
                            f"a path or image bytes; map 'image' to another column")
        folder.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".tmp")
        value.save(staging, format="PNG")
        staging.replace(target)
    return str(target)


def hub_records(source: HubSource, dataset, split: str, task_type: str, root: Path, image_folder: Path
                ) -> list[Record]:
    columns = source.columns
    absent = sorted(set(columns.values()) - set(dataset.column_names))
    if absent:
        raise DataError(f"Hugging Face dataset {source.dataset!r} split {split!r} has no column "
                        f"{', '.join(repr(c) for c in absent)} (it has {', '.join(dataset.column_names)}); "
                        f"fix the task's hub.columns")
    records = []
    for index, row in enumerate(dataset):
        sample_id = str(row[columns["id"]])
        answers = row[columns["answers"]] if "answers" in columns else [row[columns["answer"]]]
        if isinstance(answers, str) or not answers or not all(isinstance(a, (str, int, float)) for a in answers):
            raise DataError(f"Hugging Face dataset {source.dataset!r} split {split!r} row {index} (id {sample_id!r}): "
                            f"the answers must be text or a non-empty list of texts")
        metadata = {"options": list(row[columns["options"]])} if "options" in columns else {}
        records.append(Record(sample_id, image_file(row[columns["image"]], image_folder, sample_id, root),
                              str(row[columns["instruction"]]), tuple(str(a) for a in answers), task_type, metadata))
    return records


def load_hub_split(source: HubSource, root: Path, split: str, task_type: str, cache_root: Path):
    """One split as a records dataset through the arrow cache, keyed by the dataset's fingerprint."""
    dataset = open_split(source, root, split, cache_root)
    identity = f"{HUB_READER_VERSION}|{dataset._fingerprint}|{split}|{task_type}|{sorted(source.columns.items())}"
    key = "hub-" + hashlib.sha256(identity.encode()).hexdigest()[:24]
    return cached_dataset(cache_root / "arrow", key, lambda: non_empty(
        hub_records(source, dataset, split, task_type, root, cache_root / "hub-images" / key), source, split))


def non_empty(records: list[Record], source: HubSource, split: str) -> list[Record]:
    if not records:
        raise DataError(f"Hugging Face dataset {source.dataset!r} split {split!r} holds no rows; a task needs at "
                        f"least one sample in each split: choose another split or leave the task out")
    return records
