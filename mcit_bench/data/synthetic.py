"""The embedded stream ``synth-coin``: eight generated tasks that mirror CoIN, and a pre-training mix.

Each task mirrors one CoIN task in type, order and instruction template (LLaVA-1.5's templates, which
CoIN's "original" instructions use). The generator writes the real file formats (LLaVA conversation
JSON for training, CoIN-style test JSON) and PNG images, so synthetic and real data take one path.

It runs past 400 lines because the eight task generators, each a few lines over the shared scene
renderer (``data/world.py``), and the writer of their files are read together: a task's generator,
template and file layout are checked against CoIN's side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mcit_bench.data import world as w

GENERATOR_VERSION = 2
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
GROUNDING = "Please provide the bounding box coordinate of the region this sentence describes: {}."
LETTERS = "ABCDE"


@dataclass
class Sample:
    """One generated sample before it is written out."""

    image: Image.Image
    instruction: str
    answers: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticTask:
    name: str
    like: str  # the real benchmark task it mirrors
    task_type: str
    generate: Callable[[np.random.Generator], Sample]


def ten_annotators(rng: np.random.Generator, correct: str, confusers: list[str], least: int = 6) -> list[str]:
    """Ten annotator answers: at least ``least`` give ``correct``, the rest a confuser."""
    agree = int(rng.integers(least, 11))
    answers = [correct] * agree + [w.pick(rng, confusers) for _ in range(10 - agree)]
    order = rng.permutation(10)
    return [answers[i] for i in order]


def others(items: tuple[str, ...] | list[str], exclude: str) -> list[str]:
    return [item for item in items if item != exclude]


def box_answer(box: w.Box, size: int = w.IMAGE_SIZE) -> str:
    """A box as CoIN writes it: ``[x1, y1, x2, y2]`` normalised to 0-1, two decimals."""
    coords = (box.x0 / size, box.y0 / size, box.x1 / size, box.y1 / size)
    return "[" + ", ".join(f"{c:.2f}" for c in coords) + "]"


# ---------------------------------------------------------------- the eight tasks, in CoIN order


# ScienceQA's recurring templates keep one option list in one order ("Which tense does the sentence
# use? A. past B. present C. future"); sqa does the same. With options drawn and shuffled per question
# a 4-layer model has to point from the image into the option list, which mcit-tiny does not learn
# (39% after 600 steps, chance 36%; docs/DATA.md), so the task would measure nothing.
SQA_OPTION_LISTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Which object is shown in the picture?": (w.ICONS[:4], w.ICONS[4:]),
    "Which shape is shown in the picture?": (w.SHAPES[:3], w.SHAPES[3:]),
    "What is the color of the shape?": (tuple(w.COLOURS)[:3], tuple(w.COLOURS)[3:]),
}


def gen_sqa(rng: np.random.Generator) -> Sample:
    """ScienceQA-like: a multiple-choice question on the picture, answered with the option letter."""
    question = w.pick(rng, list(SQA_OPTION_LISTS))
    colour = w.pick(rng, list(w.COLOURS))
    if question.startswith("Which object"):
        correct = w.pick(rng, w.ICONS)
        image, _ = w.render_icon(rng, correct, colour)
    else:
        shape = w.pick(rng, w.SHAPES)
        image, _ = w.render_single_shape(rng, colour, shape)
        correct = shape if question.startswith("Which shape") else colour
    options = next(group for group in SQA_OPTION_LISTS[question] if correct in group)
    letter = LETTERS[options.index(correct)]
    lines = [question] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)] + [OPTION_LETTER]
    return Sample(image, "\n".join(lines), [letter], {"options": list(options)})


def gen_textvqa(rng: np.random.Generator) -> Sample:
    """TextVQA-like: read the word written on a sign."""
    word, colour = w.pick(rng, w.SIGN_WORDS), w.pick(rng, list(w.COLOURS))
    image = w.render_sign(rng, word, colour)
    question = w.pick(rng, ("What is written on the sign?", "What word is on the sign?", "What does the sign say?"))
    answers = ten_annotators(rng, word, others(w.SIGN_WORDS, word) + ["unanswerable"], least=7)
    return Sample(image, f"{question}\n{SHORT_ANSWER}", answers)


def gen_imagenet(rng: np.random.Generator) -> Sample:
    """ImageNet-like: name the object category."""
    icon, colour = w.pick(rng, w.ICONS), w.pick(rng, list(w.COLOURS))
    image, _ = w.render_icon(rng, icon, colour)
    return Sample(image, f"What is the object in the image?\n{SHORT_ANSWER}", [icon])


def gen_gqa(rng: np.random.Generator) -> Sample:
    """GQA-like: compositional and relational questions about a scene of several shapes."""
    objects = w.sample_scene(rng, int(rng.integers(2, 5)), allow_big=False)
    image = w.render_scene(rng, objects)
    kind = w.pick(rng, ("colour_of", "shape_of", "left_of", "above"))
    shapes = [o.shape for o in objects]
    colours = [o.colour for o in objects]
    unique_shape = [o for o in objects if shapes.count(o.shape) == 1]
    unique_colour = [o for o in objects if colours.count(o.colour) == 1]
    if kind == "colour_of" and unique_shape:
        target = unique_shape[int(rng.integers(len(unique_shape)))]
        question, answer = f"What color is the {target.shape}?", target.colour
    elif kind == "shape_of" and unique_colour:
        target = unique_colour[int(rng.integers(len(unique_colour)))]
        question, answer = f"What shape is the {target.colour} object?", target.shape
    else:
        first, second = (objects[i] for i in rng.choice(len(objects), size=2, replace=False))
        if kind == "above" and first.centre[1] != second.centre[1]:
            question = f"Is the {first.name} above the {second.name}?"
            answer = "yes" if first.centre[1] < second.centre[1] else "no"
        elif first.centre[0] != second.centre[0]:
            question = f"Is the {first.name} to the left of the {second.name}?"
            answer = "yes" if first.centre[0] < second.centre[0] else "no"
        else:
            question = f"Is the {first.name} above the {second.name}?"
            answer = "yes" if first.centre[1] < second.centre[1] else "no"
    return Sample(image, f"{question}\n{SHORT_ANSWER}", [answer])


def gen_vizwiz(rng: np.random.Generator) -> Sample:
    """VizWiz-like: a question on a photo taken blind; too degraded ones are unanswerable."""
    colour = w.pick(rng, list(w.COLOURS))
    if rng.random() < 0.5:
        icon = w.pick(rng, w.ICONS)
        image, _ = w.render_icon(rng, icon, colour)
        what, what_pool = icon, list(w.ICONS)
    else:
        shape = w.pick(rng, w.SHAPES)
        image, _ = w.render_single_shape(rng, colour, shape)
        what, what_pool = shape, list(w.SHAPES)
    ask_colour = rng.random() < 0.5
    question = "What color is this?" if ask_colour else "What is this?"
    correct, pool = (colour, list(w.COLOURS)) if ask_colour else (what, what_pool)
    if rng.random() < 0.35:
        image = w.degrade(rng, image, "severe")
        answers = ten_annotators(rng, "unanswerable", pool)
        answerable = False
    else:
        image = w.degrade(rng, image, "mild")
        answers = ten_annotators(rng, correct, others(pool, correct) + ["unanswerable"])
        answerable = True
    instruction = f"{question}\n{UNANSWERABLE}\n{SHORT_ANSWER}"
    return Sample(image, instruction, answers, {"answerable": answerable})


def gen_grounding(rng: np.random.Generator) -> Sample:
    """RefCOCO-like: the box of the object a short expression (its colour and shape) refers to."""
    objects = w.sample_scene(rng, int(rng.integers(2, 4)))
    image = w.render_scene(rng, objects)
    target = objects[int(rng.integers(len(objects)))]
    expression = ("the " if rng.random() < 0.5 else "") + target.name
    box = target.box
    metadata = {"bbox": [box.x0, box.y0, box.width, box.height], "size": [w.IMAGE_SIZE, w.IMAGE_SIZE]}
    return Sample(image, GROUNDING.format(expression), [box_answer(box)], metadata)


def gen_vqav2(rng: np.random.Generator) -> Sample:
    """VQAv2-like: counting, existence and attribute questions, ten annotators who disagree."""
    shape = w.pick(rng, w.SHAPES)
    kind = w.pick(rng, ("count", "exists", "colour"))
    if kind == "count":
        count = int(rng.integers(1, 5))
        distractors = [w.pick(rng, others(w.SHAPES, shape)) for _ in range(int(rng.integers(0, 3)))]
        objects = w.sample_scene(rng, count + len(distractors), allow_big=False, distinct=False,
                                 shapes=[shape] * count + distractors)
        image = w.render_scene(rng, objects)
        question = f"How many {w.SHAPE_PLURALS[shape]} are there?"
        numbers = [str(n) for n in range(1, 6)]
        answers = ten_annotators(rng, str(count), [n for n in numbers if abs(int(n) - count) == 1], least=5)
    else:
        objects = w.sample_scene(rng, int(rng.integers(1, 4)), allow_big=False)
        image = w.render_scene(rng, objects)
        if kind == "exists":
            colour = w.pick(rng, list(w.COLOURS))
            if rng.random() < 0.5:
                target = objects[int(rng.integers(len(objects)))]
                colour, shape = target.colour, target.shape
            present = any(o.colour == colour and o.shape == shape for o in objects)
            question = f"Is there {w.article(colour)} {colour} {shape}?"
            correct = "yes" if present else "no"
            answers = ten_annotators(rng, correct, ["no" if present else "yes"], least=6)
        else:
            target = objects[int(rng.integers(len(objects)))]
            question = f"What color is the {target.shape}?"
            matches = [o.colour for o in objects if o.shape == target.shape]
            answers = ten_annotators(rng, target.colour, others(list(w.COLOURS), target.colour), least=6)
            if len(matches) > 1:  # ambiguous: annotators split between the matching objects
                answers = [w.pick(rng, matches) for _ in range(10)]
    return Sample(image, f"{question}\n{SHORT_ANSWER}", answers)


def gen_ocrvqa(rng: np.random.Generator) -> Sample:
    """OCR-VQA-like: title, author and genre of a book cover."""
    title, author, colour = w.pick(rng, w.SIGN_WORDS), w.pick(rng, w.AUTHORS), w.pick(rng, list(w.COLOURS))
    image = w.render_book(rng, title, author, colour)
    kind = w.pick(rng, ("title", "author", "genre", "is_genre"))
    genre = w.GENRES[colour]
    if kind == "title":
        question, answer = "What is the title of this book?", title
    elif kind == "author":
        question, answer = "Who wrote this book?", author
    elif kind == "genre":
        question, answer = "What is the genre of this book?", genre
    else:
        asked = genre if rng.random() < 0.5 else w.pick(rng, list(w.GENRES.values()))
        question, answer = f"Is this a {asked} book?", "yes" if asked == genre else "no"
    return Sample(image, f"{question}\n{SHORT_ANSWER}", [answer])


TASKS: dict[str, SyntheticTask] = {
    task.name: task
    for task in (
        SyntheticTask("sqa", "ScienceQA", "multiple_choice", gen_sqa),
        SyntheticTask("textvqa", "TextVQA", "vqa", gen_textvqa),
        SyntheticTask("imagenet", "ImageNet", "classification", gen_imagenet),
        SyntheticTask("gqa", "GQA", "short_answer", gen_gqa),
        SyntheticTask("vizwiz", "VizWiz", "vqa", gen_vizwiz),
        SyntheticTask("grounding", "RefCOCO", "grounding", gen_grounding),
        SyntheticTask("vqav2", "VQAv2", "vqa", gen_vqav2),
        SyntheticTask("ocrvqa", "OCR-VQA", "short_answer", gen_ocrvqa),
    )
}

# ---------------------------------------------------------------- the pre-training mix

DESCRIBE_PROMPTS: tuple[str, ...] = (
    "Describe the image.",
    "What do you see in the image?",
    "Give a short description of the picture.",
    "Describe the objects in this picture.",
)


def describe_sample(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One pre-training pair: an image of the world and its description.

    The mix covers every kind of image the stream uses (shapes, scenes, objects, signs, book
    covers, degraded photos) but only ever as a description: none of the eight question formats,
    answer conventions, genres or 'unanswerable' appears in it. Scenes are described region by
    region with boxes, as LLaVA-1.5's own training data does.
    """
    # scenes three times as often: locating objects in a 4 x 4 grid is the slowest skill to learn
    kind = w.pick(rng, ("shape", "scene", "scene", "scene", "icon", "sign", "book", "photo"))
    colour = w.pick(rng, list(w.COLOURS))
    if kind == "shape":
        shape = w.pick(rng, w.SHAPES)
        image, box = w.render_single_shape(rng, colour, shape)
        size = "large" if box.width >= 32 else "small"
        where = w.region_name((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        return image, f"{w.article(size)} {size} {colour} {shape} at the {where}."
    if kind == "scene":
        # region descriptions with boxes, as in the region-level data LLaVA-1.5 is trained on
        # in random order, so that only an object's name says which box comes next: the lookup that
        # grounding and gqa need (in reading order the model learnt to walk the grid instead)
        objects = w.sample_scene(rng, int(rng.integers(1, 5)))
        parts = [f"{w.article(o.colour)} {o.name} at {box_answer(o.box)}" for o in objects]
        return w.render_scene(rng, objects), ", ".join(parts) + "."
    if kind == "icon":
        icon = w.pick(rng, w.ICONS)
        image, _ = w.render_icon(rng, icon, colour)
        return image, f"{w.article(colour)} {colour} {icon}."
    if kind == "sign":
        word = w.pick(rng, w.SIGN_WORDS)
        return w.render_sign(rng, word, colour), f"{w.article(colour)} {colour} sign with the word {word}."
    if kind == "book":
        title, author = w.pick(rng, w.SIGN_WORDS), w.pick(rng, w.AUTHORS)
        description = f"{w.article(colour)} {colour} book called {title} by {author}."
        return w.render_book(rng, title, author, colour), description
    shape = w.pick(rng, w.SHAPES)
    image, _ = w.render_single_shape(rng, colour, shape)
    if rng.random() < 0.5:
        return w.degrade(rng, image, "severe"), "a photo too dark or blurry to see."
    return w.degrade(rng, image, "mild"), f"a photo of {w.article(colour)} {colour} {shape}."


TEXT_PROMPT = "Write a line of text."


def _listing(rng: np.random.Generator, items: list[str], least: int = 2) -> str:
    most = min(len(items), 6)
    chosen = [items[i] for i in rng.permutation(len(items))[: int(rng.integers(least, most + 1))]]
    return chosen[0] if len(chosen) == 1 else ", ".join(chosen[:-1]) + " and " + chosen[-1]


_QUESTIONS: list[str] = []


def text_fact(rng: np.random.Generator) -> str:
    """A line of plain text: the language prior every real language model brings to the stream.

    It teaches the words (letters, numbers, genres, yes/no, questions) as text, never an answer to a
    question about an image.
    """
    if not _QUESTIONS:
        question_rng = np.random.default_rng(12345)
        _QUESTIONS.extend(task.generate(question_rng).instruction for task in TASKS.values() for _ in range(50))
    kind = w.pick(rng, ("letters", "numbers", "box", "counts", "genres", "answers", "question", "words", "quiz",
                        "quiz"))
    if kind == "letters":
        return f"the letters {_listing(rng, list(LETTERS))}."
    if kind == "numbers":
        return f"the numbers {_listing(rng, [f'{v:.2f}' for v in rng.integers(0, 101, size=4) / 100])}."
    if kind == "box":
        values = np.sort(rng.integers(0, 101, size=4)) / 100
        return "a list of four numbers: [" + ", ".join(f"{v:.2f}" for v in rng.permutation(values)) + "]."
    if kind == "counts":
        return f"the counts {_listing(rng, [str(n) for n in range(1, 6)])}."
    if kind == "genres":
        return f"kinds of books: {_listing(rng, list(w.GENRES.values()))}."
    if kind == "answers":
        return f"some answers are {_listing(rng, ['yes', 'no', 'unanswerable'])}."
    if kind == "question":
        return _QUESTIONS[int(rng.integers(len(_QUESTIONS)))]
    if kind == "quiz":
        return word_quiz(rng)
    pool = list(w.SIGN_WORDS + w.AUTHORS + w.ICONS + w.SHAPES) + list(w.COLOURS)
    return f"the words {_listing(rng, pool)}."


_CATEGORIES: dict[str, tuple[str, ...]] = {
    "color": tuple(w.COLOURS),
    "shape": w.SHAPES,
    "object": w.ICONS,
    "name": w.AUTHORS,
    "kind of book": tuple(w.GENRES.values()),
}


def word_quiz(rng: np.random.Generator) -> str:
    """A text-only quiz answered with a letter, like the exam questions in any language corpus."""
    category = w.pick(rng, list(_CATEGORIES))
    correct = w.pick(rng, _CATEGORIES[category])
    pool = [word for name, words in _CATEGORIES.items() if name != category for word in words]
    n_options = int(rng.integers(2, 5))
    options = [correct] + list(rng.choice(pool, size=n_options - 1, replace=False))
    options = [options[i] for i in rng.permutation(n_options)]
    lines = [f"Question: which word is {w.article(category)} {category}?"]
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines) + f"\nAnswer: {LETTERS[options.index(correct)]}."


def pretraining_sample(rng: np.random.Generator) -> tuple[Image.Image, str, str]:
    """(image, prompt, target) of the pre-training mix: 75% image descriptions, 25% plain text."""
    if rng.random() < 0.25:
        return Image.new("RGB", (w.IMAGE_SIZE, w.IMAGE_SIZE), (128, 128, 128)), TEXT_PROMPT, text_fact(rng)
    image, description = describe_sample(rng)
    return image, DESCRIBE_PROMPTS[int(rng.integers(len(DESCRIBE_PROMPTS)))], description


def vocabulary_corpus() -> list[str]:
    """Every text the world can produce, for building the embedded tokenizer's vocabulary."""
    rng = np.random.default_rng(0)
    texts = list(DESCRIBE_PROMPTS) + [TEXT_PROMPT]
    for task in TASKS.values():
        for _ in range(400):
            sample = task.generate(rng)
            texts.append(sample.instruction)
            texts.extend(sample.answers)
    for _ in range(2000):
        texts.append(describe_sample(rng)[1])
        texts.append(text_fact(rng))
    return texts


# ---------------------------------------------------------------- writing the real formats


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: the data version is a function of these fields alone."""

    seed: int
    train_per_task: int
    test_per_task: int
    tasks: tuple[str, ...]

    def fingerprint(self) -> str:
        payload = json.dumps(
            {"generator": GENERATOR_VERSION, "seed": self.seed, "train": self.train_per_task,
             "test": self.test_per_task, "tasks": list(self.tasks)},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def task_seed(seed: int, task: str, split: str) -> int:
    """Each (task, split) has its own stream of randomness, so sizes never shift other tasks."""
    digest = hashlib.sha256(f"{seed}:{task}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def write_task(root: Path, task: SyntheticTask, spec: SyntheticSpec) -> None:
    """Write one task's ``train.json`` (LLaVA conversations), ``test.json`` (CoIN style) and images."""
    task_dir = root / task.name
    (task_dir / "images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.train_per_task), ("test", spec.test_per_task)):
        rng = np.random.default_rng(task_seed(spec.seed, task.name, split))
        entries = []
        for index in range(count):
            sample = task.generate(rng)
            image_rel = f"{task.name}/images/{split}-{index:05d}.png"
            sample.image.save(root / image_rel, format="PNG", optimize=False)
            sample_id = f"{task.name}-{split}-{index:05d}"
            target = most_frequent(sample.answers)
            if split == "train":
                entries.append({
                    "id": sample_id,
                    "image": image_rel,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{sample.instruction}"},
                        {"from": "gpt", "value": target},
                    ],
                })
            else:
                entry: dict[str, Any] = {"question_id": sample_id, "image": image_rel,
                                         "text": sample.instruction, "answer": target}
                if len(sample.answers) > 1:
                    entry["answers"] = sample.answers
                if task.task_type == "grounding":
                    entry["answer_bbox"] = target
                    entry["size"] = sample.metadata["size"]
                    entry["bbox"] = sample.metadata["bbox"]
                if "options" in sample.metadata:
                    entry["options"] = sample.metadata["options"]
                entries.append(entry)
        (task_dir / f"{split}.json").write_text(json.dumps(entries, indent=1) + "\n")


def most_frequent(answers: list[str]) -> str:
    return max(answers, key=lambda a: (answers.count(a), -answers.index(a)))


def generate(spec: SyntheticSpec, cache_root: Path) -> Path:
    """Generate the stream's files under ``cache_root/<fingerprint>`` once; return that folder.

    The folder appears atomically (written to a temporary sibling, then renamed), so an interrupted
    generation never leaves a half-written data set behind.
    """
    final = cache_root / f"synth-coin-{spec.fingerprint()}"
    if (final / "DONE").exists():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=cache_root))
    try:
        for name in spec.tasks:
            write_task(staging, TASKS[name], spec)
        (staging / "DONE").write_text(spec.fingerprint() + "\n")
        try:
            os.replace(staging, final)
        except OSError:  # another process finished first: keep theirs
            if not (final / "DONE").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
