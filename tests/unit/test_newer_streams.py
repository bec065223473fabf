"""TriGap (Prism) and MLLM-CL's domain and ability streams on fixture trees laid out as the authors'
code reads them (tests/fixtures/published/{trigap,mllm-dcl,mllm-acl}/README.md cite every path and
field): which file is read where the sources name several, the prompts their inference adds, the
cells that are absent by design, and `data check` on broken trees (both scorings by hand:
test_real_benchmarks.py's HAND_SCORED)."""

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.data.formats import FIN_LETTER_PROMPT, FIN_YES_NO_PROMPT
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.splits import row_to_record
from mcit_bench.data.stream import load_stream
from mcit_bench.scoring.published import Absent, score_published
from mcit_bench.scoring.task_metrics import anls, relaxed_accuracy, score_task
from tests.conftest import FIXTURES

PUBLISHED = FIXTURES / "published"
STREAMS = ("trigap", "mllm-dcl", "mllm-acl")


@pytest.fixture(scope="module")
def tests_of(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    found = {}
    for sequence in STREAMS:
        _, test_sets = load_stream_data(load_stream(sequence), PUBLISHED / sequence, cache)
        found[sequence] = {task: [row_to_record(row) for row in rows] for task, rows in test_sets.items()}
    return found


def test_the_streams_hold_their_sources_tasks_in_order():
    assert [t.name for t in load_stream("trigap").tasks] == [  # Prism config/benchmarks/TriGap.py, cur_task 0-9
        "pmcvqa", "docvqa", "chartqa", "iconqa", "infographicvqa", "arxivqa", "roadside", "chemvqa", "floodnetvqa",
        "clevr"]
    assert [t.name for t in load_stream("mllm-dcl").tasks] == ["rs", "med", "ad", "sci", "fin"]  # train_all.sh
    assert [t.name for t in load_stream("mllm-acl").tasks] == ["ocr", "math", "vp", "app"]  # Train_ability/run.sh
    output = CliRunner().invoke(app, ["ls", "sequences"]).output
    assert all(f"{name}@1" in output for name in STREAMS)


def test_iconqa_reads_each_question_s_own_image_never_one_of_the_same_name(tests_of):
    first, second = tests_of["trigap"]["iconqa"]
    assert first.image.endswith("IconQA/test/fill_in_blank/11/image.png")
    assert second.image.endswith("IconQA/test/fill_in_blank/12/image.png")
    assert Image.open(first.image).getpixel((0, 0)) != Image.open(second.image).getpixel((0, 0))


def test_the_inference_prompts_of_mllm_cl_are_added_as_its_scripts_add_them(tests_of):
    med = tests_of["mllm-dcl"]["med"][0]  # model_pvqa.py line 43
    assert med.instruction == "What organ is abnormal? Answer the question with a single word (or phrase)."
    yes_no, letters = tests_of["mllm-dcl"]["fin"]  # model_fin.py lines 43-47: chosen by the answer
    assert yes_no.instruction.endswith(" " + FIN_YES_NO_PROMPT) and yes_no.target == "No"
    assert letters.instruction.endswith("D. Apr " + FIN_LETTER_PROMPT) and letters.target == "B"
    assert tests_of["mllm-dcl"]["rs"][0].instruction == "Is there a harbor in the image?"  # model_ai2d.py: none
    ocr, formula = tests_of["mllm-acl"]["ocr"]
    assert ocr.metadata["answer_type"] == "Regular Text Recognition"
    assert formula.metadata["answer_type"] == "Handwritten Mathematical Expression Recognition"
    assert tests_of["mllm-acl"]["vp"][0].metadata == {"type": "2D", "task": "Count"}


def test_images_are_read_beside_the_file_found_under_either_name(tests_of, tmp_path):
    stream = load_stream("mllm-acl")
    train_sets, _ = load_stream_data(stream, PUBLISHED / "mllm-acl", tmp_path)
    math_train = row_to_record(train_sets["math"][0])
    assert math_train.image.endswith("Ability_data/math2/images/m_t1.png")  # the scripts' math2, not Math
    assert tests_of["mllm-acl"]["vp"][0].image.endswith("Ability_data/CV-Benchv2/images/vp_1.jpg")
    assert tests_of["mllm-dcl"]["med"][0].image.endswith("Domain_data/Med/images/med_1.jpg")


@pytest.mark.parametrize("task,reason", [("math", "GPT-4 judge"), ("app", "MMT-Bench evaluation server")])
def test_a_task_judged_elsewhere_has_a_sound_cell_and_an_absent_published_one(tests_of, task, reason):
    definition = next(t for t in load_stream("mllm-acl").tasks if t.name == task)
    records = tests_of["mllm-acl"][task]
    answers = [record.target for record in records]
    assert score_task(definition.metric_name, answers, records)[0] == 100.0
    with pytest.raises(Absent, match=reason):
        score_published(definition.as_published.metric, answers, records)


def test_anls_and_relaxed_accuracy_by_hand():
    assert anls("Hello  World ", ["hello world"]) == 1.0  # case and spacing do not count
    assert anls("abcd", ["abce"]) == 0.75
    assert anls("abcdef", ["xyzdef"]) == 0.0  # a distance of exactly 0.5 scores nothing
    assert anls("", ["", "x"]) == 0.0  # an empty output never scores
    assert anls("cat", ["dog", "cats"]) == 0.75  # the best answer counts
    assert relaxed_accuracy("10.5", ["10"]) == 1.0 and relaxed_accuracy("10.6", ["10"]) == 0.0
    assert relaxed_accuracy("12%", ["0.12"]) == 1.0  # a percentage is read as its fraction
    assert relaxed_accuracy("0", ["0"]) == 1.0 and relaxed_accuracy("0.01", ["0"]) == 0.0  # zero: exact
    assert relaxed_accuracy(" Yes ", ["yes"]) == 1.0 and relaxed_accuracy("", [""]) == 0.0


def test_data_check_names_every_problem_of_a_broken_tree_at_once(tmp_path):
    root = tmp_path / "mllm-dcl"
    shutil.copytree(PUBLISHED / "mllm-dcl", root)
    shutil.rmtree(root / "Domain_data" / "AD")  # a missing task folder
    (root / "Domain_data" / "RS" / "images" / "rs_0101.png").unlink()  # a record without its image
    test = root / "Domain_data" / "Sci" / "test.json"
    records = json.loads(test.read_text())
    records[0]["answer"] = 5  # an answer of the wrong type
    records[1]["image"] = "../../../outside.png"  # a path that leaves the data root
    test.write_text(json.dumps(records))
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["data", "check", "mllm-dcl", "--data-root", str(root)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "Domain_data/AD/train.json is missing (the train split of ad)" in text
    assert "1 images are missing" in text and "rs_0101.png" in text
    assert "field 'answer' must be str or list, found int" in text
    assert "image path '../../../outside.png' leads outside the data root" in text
    assert "data are published at https://huggingface.co/datasets/Impression2805/MLLM-CL" in text
