"""Answer normalisation, option letters, boxes and IoU."""

import pytest

from mcit_bench.scoring.answers import box_iou, normalize_answer, parse_box, parse_option_letter

# Expected values are what the official EvalAI/VQA answer processor outputs for each input
# (checked by running the official processor on this table).
OFFICIAL_NORMALISATION = [
    ("Yes.", "yes"), ("Two", "2"), ("the cat", "cat"), ("dont", "don't"), ("A red, blue ball", "red blue ball"),
    ("1,000", "1000"), ("3.5", "3.5"), ("hello-world", "hello world"), ("yes - no", "yes no"),
    ("it's", "it 's"), ("Man's", "man 's"), ("(B)", "b"), ("New York.", "new york"), ("one dog", "1 dog"),
    ("  No  ", "no"), ("Ten.", "10"), ("an apple", "apple"), ("2 , 3", "2 3"), ("Unanswerable", "unanswerable"),
    ("red/blue", "red blue"), ("It is 5 o'clock", "it is 5 o'clock"), ("oclock", "o'clock"),
    ("[0.12, 0.5]", "0.12 0.5"), ("...", ""), ("none", "0"), ("isnt it", "isn't it"), ("e.g. this", "eg this"),
    ("Yes!", "yes"), ("hot dog?", "hot dog"), ("dr. who", "dr who"),
]


@pytest.mark.parametrize("raw,expected", OFFICIAL_NORMALISATION)
def test_normalisation_matches_the_official_processor(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("output,letter", [
    ("B", "B"), ("(C)", "C"), ("D.", "D"), ("A. circle", "A"), ("The answer is B.", "B"), ("Answer: (C)", "C"),
    ("answer is D", "D"), ("Option B", "B"),
])
def test_option_letters_are_parsed(output, letter):
    assert parse_option_letter(output, ["w", "x", "y", "z"]) == letter


@pytest.mark.parametrize("output", ["", "   ", "a red circle", "a", "I think it is a square", "E", "Z.", "the bird"])
def test_garbage_chooses_no_option(output):
    # "a" is an article, never option A; E is not among four options
    assert parse_option_letter(output, ["cat", "dog", "cow", "pig"]) is None


def test_option_text_maps_to_its_letter():
    assert parse_option_letter("Circle.", ["square", "circle"]) == "B"


def test_boxes_are_parsed():
    assert parse_box("[0.12, 0.25, 0.50, 0.75]") == (0.12, 0.25, 0.5, 0.75)
    assert parse_box("The box is [0.1,0.2,0.3,0.4].") == (0.1, 0.2, 0.3, 0.4)
    assert parse_box("[0, 0, 1, 1]") == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("output", ["", "no box", "[0.1, 0.2, 0.3]", "[1.5, 0.2, 1.8, 0.4]", "[0.5, 0.5, 0.2, 0.9]",
                                    "[0.2, 0.2, 0.2, 0.4]", "[a, b, c, d]", "0.1, 0.2, 0.3, 0.4", "[12, 30, 40, 60]"])
def test_malformed_boxes_are_rejected(output):
    assert parse_box(output) is None


def test_known_ious():
    assert box_iou((0.1, 0.2, 0.5, 0.6), (0.1, 0.2, 0.5, 0.6)) == pytest.approx(1.0)
    assert box_iou((0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(0.0625 / 0.4375)
    assert box_iou((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 1.0)) == pytest.approx(0.5)
    assert box_iou((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9)) == 0.0
