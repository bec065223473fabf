"""The readers of the real formats, on small fixture files, and their errors on bad input."""

import json
from pathlib import Path

import pytest

from mcit_bench.core.errors import DataError
from mcit_bench.data.formats import ImagePlace, load_entries, read_coin_test, read_llava_conversations
from mcit_bench.data.splits import SplitSpec, load_split, row_to_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formats"


def test_llava_conversations_become_one_record_per_turn():
    records = read_llava_conversations(FIXTURES / "train.json", FIXTURES, "short_answer")
    assert [r.id for r in records] == ["t1", "t2", "t2#1", "3"]
    assert records[0].instruction == "What color is the square?"
    assert records[0].answers == ("red",)
    assert records[1].instruction == "Is this wide?"  # the tag may close the turn too
    assert records[2].instruction == "What color is it?" and records[2].target == "blue"
    assert records[0].image == str(FIXTURES / "images" / "red.png")


def test_coin_test_json_keeps_annotators_and_options():
    vqa, choice = read_coin_test(FIXTURES / "test.json", FIXTURES, "vqa")
    assert len(vqa.answers) == 10 and vqa.target == "red"
    assert choice.id == "7" and choice.metadata["options"] == ["grey", "red"] and choice.target == "A"
    assert choice.instruction.startswith("Which color?")  # a leading image tag is dropped


def test_coin_grounding_keeps_box_and_image_size():
    (grounding,) = read_coin_test(FIXTURES / "grounding_test.json", FIXTURES, "grounding")
    assert grounding.target == "[0.00, 0.25, 1.00, 0.75]" and grounding.metadata["size"] == [12, 6]


def test_split_round_trips_through_the_arrow_cache(tmp_path):
    spec = SplitSpec(FIXTURES / "train.json", FIXTURES, "short_answer", "train")
    first = load_split(spec, tmp_path)
    cached = list(tmp_path.iterdir())
    second = load_split(spec, tmp_path)
    assert len(cached) == 1 and (cached[0] / "dataset_info.json").exists()
    assert first[:] == second[:]
    assert row_to_record(second[3]).target == "a grey square."


def test_a_damaged_cache_entry_is_rebuilt_from_the_source(tmp_path):
    spec = SplitSpec(FIXTURES / "train.json", FIXTURES, "short_answer", "train")
    first = load_split(spec, tmp_path)[:]  # read now: the dataset maps the file damaged below
    (entry,) = tmp_path.iterdir()
    for arrow in entry.glob("*.arrow"):
        arrow.write_bytes(b"not arrow")  # a disk error or a write killed before the rename existed
    assert load_split(spec, tmp_path)[:] == first


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_is_refused_with_its_file_named(tmp_path, split):
    path = tmp_path / f"{split}.json"
    path.write_text("[]")
    with pytest.raises(DataError, match=f"{path}: the {split} split holds no usable records; a task needs at "
                                        f"least one {split} sample"):
        load_split(SplitSpec(path, tmp_path, "vqa", split), tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing cached


def write(tmp_path: Path, payload) -> Path:
    path = tmp_path / "data.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


GOOD_TURNS = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]


@pytest.mark.parametrize("payload,fragment", [
    ("[{\"id\": 1,", "is neither a JSON list nor JSONL (line 1"),
    ({"id": 1}, "must hold a JSON list"),
    ([{"image": "x.png", "conversations": GOOD_TURNS}], "record 0 (id 'none') has no field 'id'"),
    # a record without an image is text-only: it may not carry the tag
    ([{"id": "a", "conversations": GOOD_TURNS}],
     "has 1 '<image>' tags in the first human turn; exactly 0 expected (the record has no 'image'"),
    ([{"id": "a", "image": "../../etc/x.png", "conversations": GOOD_TURNS}], "leads outside the data root"),
    ([{"id": "a", "image": "/etc/x.png", "conversations": GOOD_TURNS}], "leads outside the data root"),
    ([{"id": "a", "image": "x.png", "conversations": [GOOD_TURNS[0]]}], "must alternate human and gpt turns"),
    ([{"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "Q?"}, GOOD_TURNS[1]]}],
     "has 0 '<image>' tags in the first human turn"),
    ([{"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "<image><image>Q"}, GOOD_TURNS[1]]}],
     "has 2 '<image>' tags"),
    ([{"id": "a", "image": 5, "conversations": GOOD_TURNS}], "field 'image' must be str, found int"),
])
def test_bad_training_files_name_file_record_and_field(tmp_path, payload, fragment):
    path = write(tmp_path, payload)
    with pytest.raises(DataError) as error:
        read_llava_conversations(path, tmp_path, "vqa")
    assert fragment in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("payload,kind,fragment", [
    ([{"question_id": 1, "image": "x.png", "text": "Q"}], "vqa", "has no field 'answer'"),
    ([{"question_id": 1, "image": "x.png", "text": "Q", "answer": "[0.1, 0.1, 0.2, 0.2]"}], "grounding",
     "has no field 'answer_bbox'"),
    ([{"question_id": 1, "image": "x.png", "text": "Q", "answers": []}], "vqa", "non-empty list of strings"),
])
def test_bad_test_files_name_the_field(tmp_path, payload, kind, fragment):
    with pytest.raises(DataError, match=fragment):
        read_coin_test(write(tmp_path, payload), tmp_path, kind)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist; check --data-root"):
        load_split(SplitSpec(tmp_path / "nope.json", tmp_path, "vqa", "test"), None)


def test_jsonl_is_read_line_by_line_and_bad_lines_are_named(tmp_path):
    good = {"id": "a", "image": "x.png", "conversations": GOOD_TURNS}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "id": "b"}) + "\n")
    assert [entry.where for entry in load_entries(path)] == ["line 1", "line 3"]
    assert [r.id for r in read_llava_conversations(path, tmp_path, "vqa")] == ["a", "b"]
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match="train.jsonl line 2 is not JSON"):
        read_llava_conversations(path, tmp_path, "vqa")
    # JSONL under a .json name is still JSONL; a file that is neither is refused with its line
    other = tmp_path / "train.json"
    other.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    assert len(load_entries(other)) == 2
    other.write_text("{\"a\": 1} trailing")  # one line: not JSONL either
    with pytest.raises(DataError, match="is neither a JSON list nor JSONL"):
        load_entries(other)


def test_internvl_conversations_may_leave_out_the_image_tag(tmp_path):
    record = {"id": 0, "image": "x.png", "conversations": [{"from": "human", "value": "Q?"}, GOOD_TURNS[1]]}
    path = write(tmp_path, [record])
    (parsed,) = read_llava_conversations(path, tmp_path, "vqa", dialect="internvl")
    assert parsed.instruction == "Q?" and parsed.image == str(tmp_path / "x.png")
    with pytest.raises(DataError, match="has 0 '<image>' tags"):
        read_llava_conversations(path, tmp_path, "vqa")  # LLaVA's dialect needs it


def test_text_only_records_have_no_image():
    place = ImagePlace(FIXTURES, FIXTURES)
    assert place.path_of("x", "images/red.png") == str(FIXTURES / "images" / "red.png")
    records = read_llava_conversations(FIXTURES.parent / "published/coin/playground/Instructions_Original/ScienceQA/"
                                       "train.json", FIXTURES, "multiple_choice")
    assert records[-1].image == "" and records[-1].instruction.startswith("Context: N/A")
