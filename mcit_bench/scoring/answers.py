"""Answer normalisation and output parsers shared by every task metric.

``normalize_answer`` follows the official VQA evaluation (the EvalAI answer processor used for
VQAv2, TextVQA and VizWiz): lower case, punctuation stripped or spaced by the same rule, number
words to digits, articles dropped, contractions restored. The official regular expressions are kept
as written, quirks included (its period rule is a look-ahead where a look-behind was meant, and it
removes at most 32 periods, the value of ``re.UNICODE`` passed where the count goes), so our scores
agree with the official server.
"""

from __future__ import annotations

import re

from mcit_bench.core.boxes import box_inside

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official expression
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PUNCTUATION = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
                "`", ",", "?", "!")


def _process_punctuation(text: str) -> str:
    out = text
    for mark in _PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    # sic: the official call is ``PERIOD_STRIP.sub("", text, re.UNICODE)``, where re.UNICODE (32)
    # lands in ``count``: at most 32 periods go (vqaEval.py processPunctuation, m4c_evaluator.py line 195)
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def _process_digits_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The official VQA answer normalisation (EvalAI's processor)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


_LETTER_ALONE = re.compile(r"^\(?([A-Z])\)?[.):]?$")
_LETTER_FIRST = re.compile(r"^\(?([A-Z])[.):]\s")
_LETTER_STATED = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?\s*:?\s*\(?([A-Z])\b")


def parse_option_letter(output: str, options: list[str] | None = None) -> str | None:
    """The option letter an output chooses, or None when it names none.

    Accepts "B", "(B)", "B.", "B. circle", "The answer is B.", "Answer: (B)", and the exact text of
    one option. Unlike the common first-single-character rule it never reads the article "a" as
    option A, so an empty or free-text answer chooses nothing.
    """
    text = output.strip()
    n_options = len(options) if options else 26
    valid = {chr(ord("A") + i) for i in range(n_options)}
    for pattern in (_LETTER_ALONE, _LETTER_FIRST, _LETTER_STATED):
        match = pattern.search(text)
        if match and match.group(1) in valid:
            return match.group(1)
    if options:
        wanted = normalize_answer(text)
        matches = [i for i, option in enumerate(options) if wanted and normalize_answer(option) == wanted]
        if len(matches) == 1:
            return chr(ord("A") + matches[0])
    return None


_NUMBER = r"\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")


def parse_box(output: str, convention: str = "padded_square",
              size: tuple[float, float] | None = None) -> tuple[float, float, float, float] | None:
    """The first ``[x1, y1, x2, y2]`` in an output (InternVL's ``[[...]]`` included), in the task's box
    convention; None if absent or malformed.

    A box is malformed when a coordinate lies outside its convention's frame (a pixel box in a 0-1
    task is a different convention, not a near miss) or when it has no area.
    """
    match = _BOX.search(output)
    if match is None:
        return None
    box = tuple(float(value) for value in match.groups())
    return box if box_inside(box, convention, size) else None  # type: ignore[return-value]


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
