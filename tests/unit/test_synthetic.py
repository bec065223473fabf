"""The embedded stream's generator: deterministic, in the real formats, readable by the readers."""

import hashlib
import json
from pathlib import Path

import numpy as np

from mcit_bench.data import world
from mcit_bench.data.formats import read_coin_test, read_llava_conversations
from mcit_bench.data.synthetic import TASKS, SyntheticSpec, box_answer, generate
from mcit_bench.scoring.answers import parse_box

SPEC = SyntheticSpec(seed=7, train_per_task=5, test_per_task=4, tasks=tuple(TASKS))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files(tmp_path):
    first = generate(SPEC, tmp_path / "a")
    second = generate(SPEC, tmp_path / "b")
    assert tree_digest(first) == tree_digest(second)
    assert len(tree_digest(first)) == 1 + len(TASKS) * (2 + 5 + 4)  # DONE, two JSON files and the images


def test_other_seed_other_images(tmp_path):
    first = tree_digest(generate(SPEC, tmp_path / "a"))
    other = tree_digest(generate(SyntheticSpec(8, 5, 4, tuple(TASKS)), tmp_path / "b"))
    assert first["sqa/images/test-00000.png"] != other["sqa/images/test-00000.png"]


def test_a_smaller_size_is_a_prefix_of_a_larger_one(tmp_path):
    small = generate(SyntheticSpec(7, 2, 2, ("gqa",)), tmp_path / "s")
    big = generate(SyntheticSpec(7, 5, 4, ("gqa",)), tmp_path / "b")
    assert json.loads((small / "gqa/test.json").read_text()) == json.loads((big / "gqa/test.json").read_text())[:2]


def test_files_are_in_the_real_formats(tmp_path):
    root = generate(SPEC, tmp_path)
    for name, task in TASKS.items():
        train = read_llava_conversations(root / name / "train.json", root, task.task_type)
        test = read_coin_test(root / name / "test.json", root, task.task_type)
        assert len(train) == 5 and len(test) == 4
        assert all(Path(record.image).is_file() for record in train + test)
    vqa = read_coin_test(root / "vqav2" / "test.json", root, "vqa")
    assert all(len(record.answers) == 10 for record in vqa)
    grounding = read_coin_test(root / "grounding" / "test.json", root, "grounding")
    assert all(parse_box(record.target) is not None for record in grounding)


def test_box_answers_use_two_decimals_of_the_image_side():
    assert box_answer(world.Box(8, 16, 40, 64)) == "[0.12, 0.25, 0.62, 1.00]"


def test_grounding_box_is_where_the_object_was_drawn():
    rng = np.random.default_rng(3)
    sample = TASKS["grounding"].generate(rng)
    x, y, w, h = sample.metadata["bbox"]
    pixels = np.asarray(sample.image).astype(int)
    background = pixels[0, 0] if not (x == 0 and y == 0) else pixels[-1, -1]
    inside = pixels[y + h // 2, x + w // 2]
    assert np.abs(inside - background).sum() > 60  # the box centre is on the drawn shape
