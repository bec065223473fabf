"""The real streams on fixture trees laid out as CoIN, MCITlib (UCIT, MLLM-CL), D-MoLE and Prism
(TriGap) publish them (tests/fixtures/published/*/README.md cites the source of every path and field): loading, official
answer files and extras, both scorings against hand-computed values, box conventions, name
variants, CIDEr, and `data check` on good and broken trees."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.splits import row_to_record
from mcit_bench.data.stream import load_stream, locate_stream
from mcit_bench.models.collate import load_image
from mcit_bench.scoring.published import coin_grounding_box, m4c_accuracy, score_published
from mcit_bench.scoring.task_metrics import score_task
from tests.conftest import FIXTURES

PUBLISHED = FIXTURES / "published"
COIN = PUBLISHED / "coin"


def read_test_records(sequence: str, cache: Path) -> dict:
    _, test_sets = load_stream_data(load_stream(sequence), PUBLISHED / sequence, cache)
    return {task: [row_to_record(row) for row in rows] for task, rows in test_sets.items()}


@pytest.fixture(scope="module")
def published_tests(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {sequence: read_test_records(sequence, cache)
            for sequence in ("coin", "ucit", "dmole9", "trigap", "mllm-dcl", "mllm-acl")}


def test_official_answer_files_bring_every_annotator(published_tests):
    coin = published_tests["coin"]
    textvqa = {record.id: record for record in coin["textvqa"]}
    assert textvqa["34602"].answers == ("coca cola",) * 3 + ("coke",) * 5 + ("cola", "coca-cola classic")
    assert textvqa["34602"].metadata["source_answer"] == "coke"  # val.json's own answer, for CoIN's scoring
    vizwiz = {record.id: record for record in coin["vizwiz"]}  # VizWiz's own file, joined by image file name
    assert vizwiz["VizWiz_val_00000002"].answers == ("blue",) * 2 + ("navy",) * 2 + ("dark blue",) * 6
    vqav2 = {record.id: record for record in coin["vqav2"]}  # its optional answer file is absent: val.json's answer
    assert vqav2["42000"].answers == ("2",)
    dmole = {record.id: record for record in published_tests["dmole9"]["vizwiz-vqa"]}  # lines carry no answer
    assert dmole["7"].answers == ("blue",) * 2 + ("navy",) * 2 + ("dark blue",) * 6


def test_published_extras_are_joined_to_their_records(published_tests):
    sqa = {record.id: record for record in published_tests["coin"]["sqa"]}
    assert sqa["5"].metadata["published"] == {"answer": 0, "choices": 2}
    assert sqa["6"].metadata["published"] == {"answer": 1, "choices": 3}
    gqa = {record.id: record for record in published_tests["coin"]["gqa"]}
    assert gqa["20968379"].metadata["published"] == {"answer": "girl", "balanced": True}
    assert gqa["20968380"].metadata["published"]["balanced"] is False


def test_text_only_records_keep_no_image(published_tests):
    sqa = {record.id: record for record in published_tests["coin"]["sqa"]}
    assert sqa["6"].image == "" and sqa["6"].instruction.startswith("What is the capital of Utah?")
    assert sqa["5"].image.endswith("cl_dataset/ScienceQA/images/test/5/image.png")


def test_dmole_test_formats_build_the_official_prompts(published_tests):
    dmole = published_tests["dmole9"]
    iconqa = dmole["iconqa"][0]
    assert iconqa.instruction == ("What time is shown?\nA. 3:00\nB. 9:00\nC. 6:30\n"
                                  "Answer with the option's letter from the given choices directly.")
    assert iconqa.target == "C" and iconqa.metadata["options"] == ["3:00", "9:00", "6:30"]
    ocr = dmole["ocrvqa"][0]
    assert ocr.instruction == "Is this a comedy book? Answer the question using a single word or phrase."
    skvg = dmole["skvg"][0]
    assert skvg.instruction == ("Based on the knowledge The dog belongs to the woman in red.\nPlease provide the "
                                "bounding box coordinate of the region this sentence describes: "
                                "<ref>the person who owns the dog</ref>")
    # a 20x10 image: the pixel box [2, 1, 12, 9] is [100, 100, 600, 900] on InternVL's 0-1000 scale
    assert skvg.metadata["box"] == pytest.approx([100, 100, 600, 900]) and skvg.target == "[[100, 100, 600, 900]]"
    caption = {record.id: record for record in dmole["flickr30k"]}["10002456"]  # the COCO file is the test split
    assert caption.instruction == "Provide a one-sentence caption for the provided image."
    assert len(caption.answers) == 5 and caption.image.endswith("data/flickr30k/Images/10002456.jpg")


def test_ucit_captions_join_by_position_and_prove_it(published_tests, tmp_path):
    captions = {record.id: record.answers for record in published_tests["ucit"]["vizwiz-caption"]}
    assert captions["20"] == ("A white mug on a wooden table.", "A white coffee mug sits on a table.",
                              "white cup on wood")
    assert len(published_tests["ucit"]["flickr30k"][0].answers) == 5
    # a caption file whose k-th image is not the k-th test record's is refused, never joined
    root = tmp_path / "ucit"
    shutil.copytree(PUBLISHED / "ucit", root)
    path = root / "UCIT/VizWiz/val_coco_type_3000.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"], data["images"][1]["file_name"] = (data["images"][1]["file_name"],
                                                                      data["images"][0]["file_name"])
    path.write_text(json.dumps(data))
    stream = load_stream("ucit")
    with pytest.raises(DataError, match="image id 1 is VizWiz_val_00000021.jpg but test record 1"):
        load_stream_data(replace(stream, tasks=stream.tasks[2:3]), root, tmp_path / "cache")
    data["images"].append(dict(data["images"][0]))  # an image listed twice
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="lists image id 1 more than once in 'images'"):
        load_stream_data(replace(stream, tasks=stream.tasks[2:3]), root, tmp_path / "cache1")
    data["images"] = [{"id": 5, "file_name": "x.jpg"}]
    data["annotations"] = [{"image_id": 5, "id": 1, "caption": "x"}]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="needs image ids 1..2 for the 2 records"):
        load_stream_data(replace(stream, tasks=stream.tasks[2:3]), root, tmp_path / "cache2")


# (sequence, task, predictions in test-file order, sound score by hand, as-published score by hand)
HAND_SCORED = [
    # sound: "a gecko" names no option; CoIN reads the article "a" as A (its first one-letter word)
    ("coin", "sqa", ["I think a gecko", "B. Salt Lake City"], 50.0, 50.0),
    ("coin", "sqa", ["a gecko", "B. Salt Lake City"], 50.0, 100.0),
    # "Coca-Cola" -> "coca cola": 3 of 10 agree -> (3 * 2/3 + 7 * 1) / 10 = 0.9; "23": 9 agree -> 1.0 (m4c alike)
    ("coin", "textvqa", ["Coca-Cola", "23"], 95.0, 95.0),
    # sound: exact match only; CoIN: substring either way, case-sensitive ("hot" is in "hot dog",
    # "goldfish" is not in "Goldfish.")
    ("coin", "imagenet", ["Goldfish.", "hot"], 50.0, 50.0),
    ("coin", "imagenet", ["Goldfish.", ""], 50.0, 50.0),  # CoIN: an empty output is inside every label
    # CoIN averages over balanced questions only (20968380 is not): "Girl." -> "girl" is right
    ("coin", "gqa", ["Girl.", "woman"], 50.0, 100.0),
    ("coin", "gqa", ["the girl", "yes"], 100.0, 0.0),
    # sound: ten annotators ("navy": (2 * 1/3 + 8 * 2/3) / 10 = 0.6); CoIN: val.json's one answer, upper-cased
    ("coin", "vizwiz", ["unanswerable", "navy"], 80.0, 50.0),
    # IoU 1.0; IoU exactly 0.5 (sound >= 0.5, CoIN > 0.5); IoU 1/3
    ("coin", "grounding", ["[0.25, 0.25, 0.75, 0.50]", "[0.25, 0.375, 0.75, 0.50]", "[0.45, 0.10, 0.75, 0.90]"],
     200 / 3, 100 / 3),
    # no ten-answer file here: "two" -> "2" matches; CoIN compares "TWO" with "2"
    ("coin", "vqav2", ["two", "NO"], 100.0, 50.0),
    # "no." normalises to "no" (sound); CoIN lower-cases only
    ("coin", "ocrvqa", ["no.", "Mom's Family Wall Calendar 2016"], 100.0, 50.0),
    ("coin", "ocrvqa", ["Unanswerable: no", "mom's family wall calendar 2016"], 50.0, 50.0),
    ("ucit", "imagenet-r", ["Goldfish"], 100.0, 100.0),
    ("ucit", "arxivqa", ["B. epochs"], 100.0, 0.0),  # MCITlib: "B. EPOCHS" is not "B"
    ("ucit", "iconqa", ["7."], 100.0, 0.0),
    # D-MoLE: a box whose coordinates sum below 4 is read as 0-1, not 0-1000 (sound: a tiny box)
    ("dmole9", "skvg", ["[[100, 100, 600, 900]]", "[[0.5, 0.2, 1.0, 1.0]]"], 50.0, 100.0),
    ("dmole9", "skvg", ["[[100, 100, 600, 900]]", "[[500, 200, 1000, 1000]]"], 100.0, 100.0),
    # D-MoLE: the letter of the first choice whose text is in the output
    ("dmole9", "iconqa", ["It shows 6:30", "A"], 50.0, 100.0),
    ("dmole9", "ocrvqa", ["No.", "Sandra Boynton"], 100.0, 50.0),
    # "shirt": 3 of 10 agree -> (3 * 2/3 + 7 * 1) / 10 = 0.9; "dark blue": 6 agree -> 1.0
    ("dmole9", "vizwiz-vqa", ["dark blue", "shirt"], 95.0, 95.0),
    ("dmole9", "kvqa", ["united states"], 100.0, 100.0),
    ("dmole9", "pmc-vqa", ["B: lung"], 100.0, 100.0),
    # TriGap (Prism): "(B) MRI" chooses B; Prism upper-cases and compares whole strings
    ("trigap", "pmcvqa", ["(B) MRI", "C"], 100.0, 50.0),
    # ANLS: "j smith" against "j. smith" is 1 - 1/8 in both
    ("trigap", "docvqa", ["1234", "J Smith"], 93.75, 93.75),
    # "12" against "1234" is a distance of 0.5: zero by DocVQA's threshold, 0.5 for Prism (which has none);
    # "smith": 1 - 3/8
    ("trigap", "docvqa", ["12", "Smith"], 31.25, 56.25),
    # 12.9 is within 5% of 12.5 (ChartQA's relaxed accuracy); Prism compares the strings
    ("trigap", "chartqa", ["12.9", "2015"], 100.0, 50.0),
    ("trigap", "iconqa", ["7.", "3"], 100.0, 50.0),
    # MLLM-CL eval_ai2d.py: a one-word answer followed by a comma, or by a space, is found
    ("mllm-dcl", "rs", ["Yes, there is.", "farmland area"], 0.0, 100.0),
    # eval_pvqa.py: "no" occurs in "not sure"
    ("mllm-dcl", "med", ["Lung", "not sure"], 50.0, 100.0),
    # eval_sci.py: AI2D and TQA exact; MapQA's "Which states" by the share of states among the
    # comma-separated pieces (" ohio" is not "ohio")
    ("mllm-dcl", "sci", ["A", "texas, ohio", "yes"], 200 / 3, 250 / 3),
    ("mllm-dcl", "fin", ["no.", "B. Feb"], 50.0, 50.0),
    # eval_ocr.py: two hits, printed as hits / 10
    ("mllm-acl", "ocr", ["It says hello", "x^2+1"], 50.0, 0.2),
    # eval_sat.py: "(a)" occurs in "lamp(a)"
    ("mllm-acl", "vp", ["(B)", "lamp (A)"], 50.0, 100.0),
]


@pytest.mark.parametrize("sequence,task,predictions,sound,published", HAND_SCORED,
                         ids=[f"{case[0]}-{case[1]}-{i}" for i, case in enumerate(HAND_SCORED)])
def test_both_scorings_match_hand_computed_values(published_tests, sequence, task, predictions, sound, published):
    definition = next(t for t in load_stream(sequence).tasks if t.name == task)
    records = published_tests[sequence][task]
    assert score_task(definition.metric_name, predictions, records)[0] == pytest.approx(sound)
    assert score_published(definition.as_published.metric, predictions, records) == pytest.approx(published)


def test_coin_grounding_parser_cuts_a_character_at_each_end():
    # eval_grounding.py: brackets removed, then text[1:-1]: the first digit of x1 and the last of y2 go
    assert coin_grounding_box("[0.25, 0.25, 0.75, 0.50]") == [0.25, 0.25, 0.75, 0.5]
    assert coin_grounding_box("[10, 20, 30, 40]") == [0.0, 20.0, 30.0, 4.0]
    assert coin_grounding_box(" [0.1, 0.2, 0.3, 0.4] ") == [0.1, 0.2, 0.3, 0.4]
    assert coin_grounding_box("[0.1, 0.2, 0.3]") is None and coin_grounding_box("a box") is None


def test_m4c_scores_an_emptied_answer_like_the_official_evaluator():
    # "the" and "a" normalise to "": with every reference emptied too, m4c gives full credit
    assert m4c_accuracy("the", ["a"] * 10) == pytest.approx(1.0)
    assert m4c_accuracy("", ["yes"] * 10) == 0.0
    assert m4c_accuracy("2", ["two"] * 4 + ["3"] * 6) == pytest.approx(1.0)


def test_captions_as_mcitlib_reports_them():
    from mcit_bench.core.records import Record
    from mcit_bench.scoring.captions import coco_caption_scores

    joined = {"references": "val_coco_type_3000.json"}  # the COCO caption file MCITlib scores against
    records = [Record("1", "", "", ("two brown dogs run fast",) * 2, "caption", joined),
               Record("2", "", "", ("a red bus on the road",) * 2, "caption", joined)]
    outputs = ["two brown dogs run fast", "a red bus on the road"]
    scores = coco_caption_scores(outputs, records)
    # every n-gram of each output is in its references, lengths equal: BLEU-1..4 = 1 and ROUGE-L = 1;
    # CIDEr-D = 10 x mean over n of cosine 1 = 10 per image (two images with disjoint words: idf > 0)
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert scores[name] == pytest.approx(100.0, abs=1e-3)
    assert scores["CIDEr"] == pytest.approx(1000.0, abs=1e-3)
    assert scores["METEOR"] == pytest.approx(100.0, abs=1e-3)  # every word matched, in one chunk
    assert score_published("mcitlib_caption", outputs, records) == pytest.approx(sum(scores.values()) / 7)
    # without the caption file MCITlib's script has nothing to score against: the cell is absent
    from mcit_bench.scoring.published import MCITLIB_CAPTION_FILE_ABSENT, Absent

    with pytest.raises(Absent, match=re.escape(MCITLIB_CAPTION_FILE_ABSENT)):
        score_published("mcitlib_caption", outputs, [Record(r.id, "", "", r.answers, "caption") for r in records])


def test_grounding_boxes_live_on_the_padded_square():
    # a wide 16x8 image becomes 16x16 with 4 rows of padding above: its content spans y 0.25-0.75
    from mcit_bench.models.collate import expand_to_square

    square = expand_to_square(load_image(COIN / "cl_dataset/COCO2014/train2014/COCO_train2014_000000000009.jpg"),
                              (0, 0, 0))
    assert square.size == (16, 16)
    assert square.getpixel((0, 0)) == (0, 0, 0) and square.getpixel((0, 15)) == (0, 0, 0)


def test_boxes_move_between_conventions():
    from mcit_bench.data.formats import to_convention

    size = (20.0, 10.0)  # a wide image: its padded square is 20x20 with 5 rows above
    assert to_convention([2, 1, 12, 9], "pixel", "thousand", size) == pytest.approx([100, 100, 600, 900])
    assert to_convention([2, 1, 12, 9], "pixel", "padded_square", size) == pytest.approx([0.1, 0.3, 0.6, 0.7])
    assert to_convention([0.1, 0.3, 0.6, 0.7], "padded_square", "pixel", size) == pytest.approx([2, 1, 12, 9])
    assert to_convention([100, 100, 600, 900], "thousand", "pixel", size) == pytest.approx([2, 1, 12, 9])


@pytest.mark.parametrize("path,mode", [
    ("coin/cl_dataset/TextVQA/train_images/0054c91397f2fe05.jpg", "CMYK"),
    ("coin/cl_dataset/TextVQA/train_images/003a8ae2ef43b901.png", "RGBA"),
    ("coin/cl_dataset/ImageNet/val/n01443537/ILSVRC2012_val_00000001.JPEG", "L"),
    ("coin/cl_dataset/GQA/images/2354786.png", "I;16"),
    ("dmole9/data/iconqa/images/test/choose_txt/42/image.png", "P"),
    ("dmole9/data/pmcvqa/images/PMC1065025_F2.png", "LA"),
])
def test_images_in_odd_modes_load_as_rgb(path, mode):
    with Image.open(PUBLISHED / path) as original:
        assert original.mode == mode
        size = original.size
    image = load_image(PUBLISHED / path)
    assert image.mode == "RGB" and image.size == size
    low, high = image.getextrema()[0]
    assert 0 <= low < high <= 255  # 16-bit values scaled, not clipped to white


def test_instruction_variants_and_folder_names(tmp_path):
    located = locate_stream(load_stream("coin"), COIN)
    assert located[0].train == COIN / "playground/Instructions_Original/ScienceQA/train.json"
    assert located[1].test == COIN / "playground/Instructions_Original/TextVQA/val.json"
    # an older download: the folder CoIN's first README named, at the top of the tree
    root = tmp_path / "coin"
    shutil.copytree(COIN, root)
    (root / "playground/Instructions_Original").rename(root / "Instruction_Type1")
    assert locate_stream(load_stream("coin"), root)[0].train == root / "Instruction_Type1/ScienceQA/train.json"
    result = CliRunner().invoke(app, ["data", "check", "coin", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "instructions (original): Instruction_Type1 (one of" in " ".join(result.output.split())
    diverse = load_stream("coin", variant="diverse")
    assert diverse.content_hash() != load_stream("coin").content_hash()
    (root / "Instruction_Type1").rename(root / "Instructions_Diverse")
    assert locate_stream(diverse, root)[1].test == root / "Instructions_Diverse/TextVQA/val.json"
    with pytest.raises(ConfigError, match="has no variant 'fancy'; its variants are original, diverse, ten-types"):
        load_stream("coin", variant="fancy")
    with pytest.raises(ConfigError, match="has no instruction variants"):
        load_stream("synth-coin", variant="diverse")


def test_every_real_stream_is_listed_with_its_tasks():
    output = CliRunner().invoke(app, ["ls", "sequences"]).output
    for name in ("coin@2", "ucit@2", "dmole9@2", "synth-coin@1"):
        assert name in output
    assert [t.name for t in load_stream("ucit").tasks] == [
        "imagenet-r", "arxivqa", "vizwiz-caption", "iconqa", "clevr-math", "flickr30k"]
    assert [t.name for t in load_stream("dmole9").tasks] == [
        "vizwiz-caption", "skvg", "textcaps", "iconqa", "ocrvqa", "flickr30k", "vizwiz-vqa", "kvqa", "pmc-vqa"]


@pytest.mark.parametrize("sequence", ["coin", "ucit", "dmole9", "trigap", "mllm-dcl", "mllm-acl"])
def test_data_check_passes_each_published_tree_and_says_how_it_scores(sequence):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["data", "check", sequence, "--data-root",
                                                             str(PUBLISHED / sequence)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for task in load_stream(sequence).tasks:
        assert f"as published: {task.as_published.metric}" in text
    if sequence == "coin":
        assert "as published: coin_scienceqa with pid_splits cl_dataset/ScienceQA/pid_splits.json, problems" in text
        assert "vqa_accuracy against the test file's answers (optional" in text  # VQAv2's own file is absent
        assert "1 text only" in text
    if sequence == "trigap":  # Prism's '_sub' name where the user made it, the full file where not
        assert "train: instructions/DocVQA/train_converted_sub.json (one of" in text
        assert "train: instructions/ChartQA/train_standard_4w.json (one of" in text
    if sequence == "mllm-acl":  # a test set in a folder named unlike its task; two cells judged elsewhere
        assert "test: Ability_data/CV-Benchv2/test.json (one of Ability_data/VP_test/test.json" in text
        assert text.count("warning: as published, absent:") == 2


def test_data_check_warns_of_the_ucit_caption_cells_that_will_be_absent(tmp_path):
    root = tmp_path / "ucit"
    shutil.copytree(PUBLISHED / "ucit", root)
    for task in ("VizWiz", "Flickr30k"):
        (root / "UCIT" / task / "val_coco_type_3000.json").unlink()
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["data", "check", "ucit", "--data-root", str(root)])
    assert result.exit_code == 0, result.output  # the files are optional: the sound matrix scores without them
    text = " ".join(result.output.split())
    assert text.count("warning: as published, absent: MCITlib scores captions only against a COCO caption "
                      "file") == 2


def test_cider_on_a_split_by_hand():
    from mcit_bench.core.records import Record

    # two images with disjoint words: an output equal to all of its three-word references has cosine 1
    # for 1-, 2- and 3-grams, no 4-gram at all and no length penalty, so CIDEr-D = 10 x (1 + 1 + 1 + 0) / 4
    # = 7.5 per sample (750 as a task score); punctuation and case go in tokenisation
    records = [Record("1", "", "", ("two dogs run", "two dogs run"), "caption"),
               Record("2", "", "", ("a red bus", "a red bus"), "caption")]
    score, per_sample = score_task("cider", ["two dogs run", "A red bus."], records)
    assert per_sample == pytest.approx([7.5, 7.5]) and score == pytest.approx(750.0)
    score, per_sample = score_task("cider", ["two dogs run", ""], records)
    assert per_sample == pytest.approx([7.5, 0.0]) and score == pytest.approx(375.0)


def broken_copy(tmp_path: Path) -> Path:
    """The CoIN tree with one problem of each kind planted."""
    root = tmp_path / "coin"
    shutil.copytree(COIN, root)
    instructions = root / "playground/Instructions_Original"
    (root / "cl_dataset/GQA/images/2375429.png").unlink()  # a missing image
    (root / "cl_dataset/OCR-VQA/images/1000016.jpg").write_bytes(b"not a jpeg")  # an unreadable image
    train = instructions / "ScienceQA/train.json"
    records = json.loads(train.read_text())
    records[1]["conversations"][0]["value"] = "<image>\n" + records[1]["conversations"][0]["value"]  # two tags
    train.write_text(json.dumps(records))
    answers = root / "cl_dataset/TextVQA/TextVQA_0.5.1_val.json"
    data = json.loads(answers.read_text())
    data["data"][0]["answers"] = data["data"][0]["answers"][:7]  # fewer than ten annotators
    answers.write_text(json.dumps(data))
    test = instructions / "VizWiz/val.json"
    records = json.loads(test.read_text())
    records[1]["image"] = "VizWiz/val/VizWiz_val_00000077.jpg"  # no entry in the official answer file (and missing)
    test.write_text(json.dumps(records))
    test = instructions / "ImageNet/test.json"
    records = json.loads(test.read_text())
    records[0]["image"] = "../../../outside.JPEG"  # escapes the data root
    test.write_text(json.dumps(records))
    test = instructions / "Grounding/test.json"
    records = json.loads(test.read_text())
    records[0]["answer_bbox"] = "[0.25, 0.25, 1.75, 0.50]"  # outside its image
    test.write_text(json.dumps(records))
    questions = root / "cl_dataset/GQA/testdev_balanced_questions.json"
    data = json.loads(questions.read_text())
    data["20968379"]["answer"] = "boy"  # disagrees with test.json: the join is not provably right
    questions.write_text(json.dumps(data))
    (instructions / "VQAv2/train.json").write_text('{"id": 1}\n{broken')  # a line that is not JSON
    return root


def test_data_check_lists_every_problem_at_once(tmp_path):
    root = broken_copy(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", "coin", "--data-root", str(root)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "1 images are missing" in text and "2375429.png" in text
    assert "1000016.jpg: unreadable" in text
    assert "has 2 '<image>' tags in the first human turn; exactly 1 expected" in text
    assert "record '34602' has 7 annotator answers" in text
    assert "1 test records have no entry in the annotation file" in text
    assert "image path '../../../outside.JPEG' leads outside the data root" in text
    assert "box [0.25, 0.25, 1.75, 0.5] is not inside its image" in text
    assert "record 20968379 answers 'girl' but" in text and "gives 'boy'; the files do not belong together" in text
    assert "VQAv2/train.json line 2 is not JSON" in text
    assert "images are published at https://ocr-vqa.github.io" in text


def test_data_check_reports_bad_dmole_files(tmp_path):
    root = tmp_path / "dmole9"
    shutil.copytree(PUBLISHED / "dmole9", root)
    captions = root / "data/textcaps/val.json"
    data = json.loads(captions.read_text())
    data["annotations"].append({"image_id": 99, "id": 9, "caption": "orphan"})  # an id absent from images
    data["images"].append({"id": 8, "file_name": "x.png"})  # an image without captions
    captions.write_text(json.dumps(data))
    flickr = root / "data/flickr30k/flickr30k_test_karpathy.json"
    data = json.loads(flickr.read_text())
    data["images"].append(dict(data["images"][0]))  # one image twice: its captions would be guessed
    flickr.write_text(json.dumps(data))
    choices = root / "data/pmcvqa/test_clean.jsonl"
    choices.write_text(choices.read_text().replace('"answer": 1', '"answer": 7'))
    result = CliRunner().invoke(app, ["data", "check", "dmole9", "--data-root", str(root)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "1 captions name image ids absent from 'images' (first: 99)" in text
    assert "image id 8 has no caption" in text
    assert "line 1 field 'answer' is 7, not an index into its 4 choices" in text
    assert "lists image id 10002456 more than once in 'images'" in text


def test_a_run_refuses_fewer_than_ten_annotators(tmp_path):
    root = broken_copy(tmp_path)
    stream = load_stream("coin", subset=None)
    textvqa = next(task for task in stream.tasks if task.name == "textvqa")
    with pytest.raises(DataError, match="has 7 annotator answers; the VQA accuracy needs all 10"):
        load_stream_data(replace(stream, tasks=(textvqa,)), root, tmp_path / "cache")


def test_bleu4_beside_cider_is_the_corpus_score():
    from mcit_bench.core.records import Record
    from mcit_bench.scoring.captions import bleu4_corpus

    records = [Record("1", "", "", ("two brown dogs run fast",), "caption"),
               Record("2", "", "", ("a red bus on the road",), "caption")]
    # every n-gram of every output is in its reference and the lengths match: BLEU-4 = 1 (x100)
    assert bleu4_corpus(["two brown dogs run fast", "a red bus on the road"], records) == pytest.approx(100.0)
    assert bleu4_corpus(["cats", "green"], records) == pytest.approx(0.0, abs=1e-3)
