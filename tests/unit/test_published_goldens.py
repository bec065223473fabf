"""Each as-published rule against what the authors' own scripts score the same probe predictions.

The goldens in tests/golden/published_probes.json were written by tests/golden/make_published_probes.py
running the scripts of the commits it records (CoIN's ETrain/Eval/LLaVA/CoIN/*.py as published,
D-MoLE's scoring blocks with the model shimmed); docs/METHODS.md gives the command. A null golden is
a probe the script stops on: our rule must name the cell absent, not score it.
"""

import json
from pathlib import Path

import pytest

from mcit_bench.core.records import Record
from mcit_bench.data.formats import EVALUATOR_FIELDS
from mcit_bench.scoring.published import Absent, score_published
from mcit_bench.scoring.task_metrics import score_task

PROBES = json.loads((Path(__file__).resolve().parents[1] / "golden" / "published_probes.json").read_text())
LETTERS = "ABCDE"


def record_of(rule: str, fields: dict, number: int = 0) -> Record:
    """The test record our readers make of the probe's fields (data/formats.py, data/published.py)."""
    qid = f"q{number}"
    if rule == "coin_scienceqa":
        letter = LETTERS[fields["answer_index"]]
        return Record(qid, "", "", (letter,), "multiple_choice",
                      {"options": fields["choices"],
                       "published": {"answer": fields["answer_index"], "choices": len(fields["choices"])}})
    if rule == "coin_grounding":
        return Record(qid, "", "", (fields["answer"],), "grounding", {"size": fields["size"]})
    if rule in ("coin_textvqa", "dmole_vqa_score", "dmole_exact", "vqa_accuracy"):
        return Record(qid, "", "", tuple(fields["answers"]), "vqa", {})
    if rule == "dmole_grounding":
        return Record(qid, "", "", ("",), "grounding", {"size": fields["size"], "pixel_box": fields["pixel_box"]})
    if rule == "dmole_option":
        return Record(qid, "", "", (fields["answer"],), "multiple_choice", {"options": fields["options"]})
    if rule == "coin_gqa":  # testdev_balanced_questions.json joined (data/published.py)
        return Record(qid, "", "", (fields["answer"],), "short_answer",
                      {"published": {"answer": fields["answer"], "balanced": fields["balanced"]}})
    if rule in ("mcitlib_caption", "coco_cider"):  # joined from the COCO caption file
        return Record(qid, "", "", tuple(fields["references"]), "caption", {"references": "val_coco_type.json"})
    if rule.startswith("mllm_cl_") or rule == "prism_anls":  # data/formats.py's CoIN-style record
        answer = fields["answer"]
        metadata = {key: fields[key] for key in EVALUATOR_FIELDS if key in fields}
        return Record(qid, fields.get("image", "img.jpg"), fields.get("text", "Question?"),
                      tuple(answer) if isinstance(answer, list) else (answer,), "short_answer", metadata)
    return Record(qid, "", "", (fields["answer"],), "short_answer", {})


CASES = [(rule, index, probe) for rule, probes in PROBES["rules"].items() for index, probe in enumerate(probes)]


@pytest.mark.parametrize("rule,index,probe", CASES, ids=[f"{rule}-{index}" for rule, index, _ in CASES])
def test_the_rule_scores_each_probe_as_the_authors_script_does(rule, index, probe):
    if "batch" in probe or "split" in probe:  # one batch of the script's loader, or a whole split, in order
        items = probe.get("batch") or probe["split"]
        predictions = [item["prediction"] for item in items]
        records = [record_of(rule, item, number) for number, item in enumerate(items)]
    else:
        predictions, records = [probe["prediction"]], [record_of(rule, probe["record"])]
    if rule == "vqa_accuracy":  # the sound metric, against the official evaluator (vqaEval.py)
        assert score_task(rule, predictions, records)[0] == pytest.approx(probe["golden"], abs=0.01)
        return
    if probe["golden"] is None:
        with pytest.raises(Absent):
            score_published(rule, predictions, records)
        return
    assert score_published(rule, predictions, records) == pytest.approx(probe["golden"], abs=0.01)


def test_every_as_published_rule_of_the_shipped_streams_has_probes():
    from mcit_bench.data.stream import builtin_sequences, read_sequence

    used = {task.as_published.metric for path in builtin_sequences().values()
            for task in read_sequence(path).tasks if task.as_published is not None}
    probed = {rule for rule, probes in PROBES["rules"].items() if len(probes) >= 5}
    assert used - JUDGED_ELSEWHERE <= probed


# scored by a judge model or a server, which no probe can run: always absent, with the reason
JUDGED_ELSEWHERE = {"mllm_cl_math", "mllm_cl_app"}


@pytest.mark.parametrize("rule,reason", [("mllm_cl_math", "GPT-4 judge"),
                                         ("mllm_cl_app", "MMT-Bench evaluation server")])
def test_a_rule_scored_by_a_judge_or_a_server_is_absent_with_its_reason(rule, reason):
    with pytest.raises(Absent, match=reason):
        score_published(rule, ["7"], [Record("q", "", "", ("7",), "short_answer", {})])


def test_a_cell_the_script_cannot_score_is_absent_with_its_reason(tmp_path):
    from mcit_bench.results.scoring import published_matrix
    from mcit_bench.rundir import predictions_path, write_predictions
    from mcit_bench.scoring.published import MCITLIB_CAPTION_FILE_ABSENT

    rows = {"label": [{"id": "1", "answers": ["goldfish"], "task_type": "short_answer", "metadata": "{}"}],
            "caption": [{"id": "1", "answers": ["a dog"], "task_type": "caption", "metadata": "{}"}]}
    outputs = {0: {"label": "shark", "caption": "a cat"}, 1: {"label": "a goldfish", "caption": "a dog"},
               2: {"label": "goldfish", "caption": "a dog"}}
    for stage, answers in outputs.items():
        for task, task_rows in rows.items():
            write_predictions(predictions_path(tmp_path, stage, task), task_rows, [answers[task]])
    stages = [{"stage": 1, "tasks": ["label"]}, {"stage": 2, "tasks": ["caption"]}]
    scored = published_matrix(tmp_path, ["label", "caption"], stages,
                              {"label": "coin_imagenet", "caption": "mcitlib_caption"})
    assert scored["matrix"] == [[0.0, None], [100.0, None], [100.0, None]]
    assert scored["absent"] == {"caption": MCITLIB_CAPTION_FILE_ABSENT}
    assert set(scored["summary"].values()) == {None}


# the caption rules run Java's tokenizer per call and are unbounded (CIDEr x100), and GQA's scores a
# split of questions: their goldens hold them
PARSING_RULES = sorted(set(PROBES["rules"]) - {"mcitlib_caption", "coco_cider", "coin_gqa", "vqa_accuracy"})


@pytest.mark.parametrize("rule", PARSING_RULES)
def test_any_output_scores_in_range_or_is_absent_never_a_traceback(rule):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    probe = PROBES["rules"][rule][0]
    fields = (probe.get("batch") or probe.get("split") or [probe.get("record")])[0]
    record = record_of(rule, fields)
    outputs = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.from_regex(
        r"\[{0,2}-?[0-9.e]{0,6}(, ?-?[0-9.e]{0,6}){0,4}\]{0,2}", fullmatch=True)

    @settings(max_examples=150, deadline=None)
    @given(outputs)
    def scores(output: str) -> None:
        try:
            value = score_published(rule, [output], [record])
        except Absent:
            return
        assert 0.0 <= value <= 100.0

    scores()


def test_the_sound_vqa_accuracy_normalises_even_when_the_annotators_agree():
    """Where the sound metric differs from vqaEval.py on purpose (docs/METHODS.md): the official
    evaluator normalises only when the ten answers differ, so it scores "Yes." 0 against ten "yes"."""
    assert score_task("vqa_accuracy", ["Yes."], [Record("q", "", "", ("yes",) * 10, "vqa", {})])[0] == 100.0
