"""Official files a source's evaluation script reads beside the test file, joined to the test records.

The joined values land in ``metadata["published"]`` of each record, so the as-published scoring
(``mcit_bench.scoring.published``) stays a function of the saved predictions alone. A join is only
made when it can be shown to pair the right entries: every record must be found, and where both
sides state the answer they must agree; anything else is an error, never a guess.

Roles (a task's ``as_published.extras``):

* ``problems`` + ``pid_splits``: ScienceQA's ``problems.json`` and ``pid_splits.json``, read by CoIN's
  ``ETrain/Eval/LLaVA/CoIN/eval_science_qa.py`` (lines 43-47): the answer is an index into the
  problem's ``choices``, and only letters up to the number of choices count (``get_pred_idx``).
* ``questions``: GQA's ``testdev_balanced_questions.json``, read by CoIN's ``eval_gqa.py`` (line 126):
  the gold answer, and whether the question is in the balanced set the accuracy averages over.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import DataError
from mcit_bench.core.records import Record

EXTRA_ROLES = ("problems", "pid_splits", "questions")
LETTERS = "ABCDE"  # CoIN's eval_science_qa.py --options


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{what} {path} cannot be read as JSON ({error}); re-download it") from None


def _scienceqa(records: list[Record], problems_path: Path, splits_path: Path, source: Path) -> list[Record]:
    problems = _load(problems_path, "ScienceQA problems file")
    splits = _load(splits_path, "ScienceQA split file")
    if not isinstance(problems, dict) or not isinstance(splits, dict) or "test" not in splits:
        raise DataError(f"{problems_path} and {splits_path} are not ScienceQA's problems.json and pid_splits.json "
                        f"(a problem per id, and a 'test' list of ids); re-download them")
    test_ids = set(map(str, splits["test"]))
    outside = [r.id for r in records if r.id not in test_ids or r.id not in problems]
    if outside:
        raise DataError(f"{source}: {len(outside)} records are not test problems of {problems_path} (first: "
                        f"{outside[0]}); use the problems.json and pid_splits.json of the same ScienceQA release")
    joined = []
    for record in records:
        problem = problems[record.id]
        try:
            answer, choices = int(problem["answer"]), len(problem["choices"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{problems_path}: problem {record.id} has no integer 'answer' and 'choices' list; "
                            f"re-download the file") from None
        stated = record.target.strip().upper()
        if stated in LETTERS and LETTERS.index(stated) != answer:
            raise DataError(f"{source}: record {record.id} answers {stated} but {problems_path} gives choice "
                            f"{answer} ({LETTERS[answer] if answer < len(LETTERS) else answer}); the files do not "
                            f"belong together")
        joined.append(replace(record, metadata={**record.metadata,
                                                "published": {"answer": answer, "choices": choices}}))
    return joined


def _gqa(records: list[Record], questions_path: Path, source: Path) -> list[Record]:
    questions = _load(questions_path, "GQA question file")
    if not isinstance(questions, dict):
        raise DataError(f"{questions_path} is not a GQA question file (an object keyed by question id); "
                        f"re-download testdev_balanced_questions.json")
    missing = [r.id for r in records if r.id not in questions]
    if missing:
        raise DataError(f"{source}: {len(missing)} records are not in {questions_path} (first: {missing[0]}); "
                        f"use the question file of the same split")
    joined = []
    for record in records:
        question = questions[record.id]
        gold = str(question.get("answer", ""))
        if record.target.strip().lower() != gold.strip().lower():
            raise DataError(f"{source}: record {record.id} answers {record.target!r} but {questions_path} gives "
                            f"{gold!r}; the files do not belong together")
        joined.append(replace(record, metadata={**record.metadata, "published": {
            "answer": gold, "balanced": bool(question.get("isBalanced", False))}}))
    return joined


def join_extras(records: list[Record], extras: dict[str, Path], source: Path,
                problems: list[str] | None = None) -> list[Record]:
    """The records with what the present official files say of each; a failed join is reported
    (into ``problems`` when given) and leaves the records as they were."""
    unknown = sorted(set(extras) - set(EXTRA_ROLES))
    if unknown:
        raise ValueError(f"unknown published extras {unknown}; known roles are {', '.join(EXTRA_ROLES)}")
    try:
        if "problems" in extras and "pid_splits" in extras:
            records = _scienceqa(records, extras["problems"], extras["pid_splits"], source)
        if "questions" in extras:
            records = _gqa(records, extras["questions"], source)
    except DataError as error:
        if problems is None:
            raise
        problems.append(str(error))
    return records
