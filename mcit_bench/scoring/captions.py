"""Caption metrics the way the field computes them: pycocoevalcap's CIDEr-D (the cell value) and BLEU-4.

CIDEr weighs n-grams by their rarity across the references of the whole test split, so a caption's
score depends on the split: it scores a task's predictions together, never one at a time. The
task score, the mean of the per-sample values x100, is pycocoevalcap's corpus CIDEr x100.
Both sides go through pycocoevalcap's PTB tokenizer (Stanford CoreNLP, run with Java), as in the
COCO caption evaluation, so the numbers match published ones.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator, Sequence

from mcit_bench.core.errors import MetricError
from mcit_bench.core.records import Record

INSTALL_HINT = "install it with: pip install 'mcit-bench[captions]'"
JAVA_HINT = ("caption metrics tokenise with Stanford CoreNLP, which needs Java: install a Java runtime "
             "(for example apt-get install default-jre-headless)")


@contextlib.contextmanager
def _silenced_stderr() -> Iterator[None]:
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def require_caption_tools() -> None:
    """Fail before any training when captions could not be scored at the end."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pycocoevalcap") is None:
        raise MetricError(f"caption tasks are scored with pycocoevalcap, which is not installed; {INSTALL_HINT}")
    if shutil.which("java") is None:
        raise MetricError(JAVA_HINT)


def _tokenized(predictions: Sequence[str], records: Sequence[Record]) -> tuple[dict, dict]:
    """(references, predictions) keyed by sample position, PTB-tokenised and lower-cased."""
    return _tokenized_texts(tuple(predictions), tuple(record.answers for record in records))


@functools.lru_cache(maxsize=16)
def _tokenized_texts(predictions: tuple[str, ...], references: tuple[tuple[str, ...], ...]) -> tuple[dict, dict]:
    # cached: CIDEr, BLEU-4 and the as-published scores of one split tokenise the same texts, and each
    # call starts Java anew (the scorers only read the dictionaries)
    try:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise MetricError(f"caption metrics need pycocoevalcap; {INSTALL_HINT}") from None
    by_sample = {str(i): [{"caption": answer} for answer in answers] for i, answers in enumerate(references)}
    outputs = {str(i): [{"caption": prediction}] for i, prediction in enumerate(predictions)}
    tokenizer = PTBTokenizer()
    try:
        with _silenced_stderr():  # CoreNLP reports its speed on the process's own stderr
            return tokenizer.tokenize(by_sample), tokenizer.tokenize(outputs)
    except FileNotFoundError:
        raise MetricError(JAVA_HINT) from None


def cider_scores(predictions: Sequence[str], records: Sequence[Record]) -> list[float]:
    """Per-sample CIDEr-D (pycocoevalcap's ``Cider``; about 0-10, reported x100 as the task score)."""
    if not records:
        return []
    from pycocoevalcap.cider.cider import Cider

    references, outputs = _tokenized(predictions, records)
    with contextlib.redirect_stdout(io.StringIO()):
        _, per_sample = Cider().compute_score(references, outputs)
    return [float(value) for value in per_sample]


def bleu4_corpus(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """Corpus BLEU-4 of a split (pycocoevalcap's ``Bleu``, the number the COCO evaluation reports), x100."""
    if not records:
        return 0.0
    from pycocoevalcap.bleu.bleu import Bleu

    references, outputs = _tokenized(predictions, records)
    with contextlib.redirect_stdout(io.StringIO()):
        corpus, _ = Bleu(4).compute_score(references, outputs, verbose=0)
    return 100.0 * float(corpus[3])


@functools.cache
def meteor_scorer():
    """One METEOR process for the whole run: it spends seconds loading its paraphrase table, which
    every stage's evaluation of every caption task would otherwise pay again (its ``__del__`` ends it)."""
    from pycocoevalcap.meteor.meteor import Meteor

    with _silenced_stderr():
        return Meteor()


COCO_CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def coco_caption_scores(predictions: Sequence[str], records: Sequence[Record]) -> dict[str, float]:
    """The seven numbers COCOEvalCap prints (BLEU-1..4, METEOR, ROUGE-L, CIDEr), x100, computed with
    its scorers on PTB-tokenised text as ``COCOEvalCap.evaluate`` does, less SPICE (which downloads
    Stanford CoreNLP models at first use, and which no source's table reports)."""
    if not records:
        return {name: 0.0 for name in COCO_CAPTION_METRICS}
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    references, outputs = _tokenized(predictions, records)
    scores: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()), _silenced_stderr():
        bleu, _ = Bleu(4).compute_score(references, outputs, verbose=0)
        scores.update({f"Bleu_{n + 1}": float(value) for n, value in enumerate(bleu)})
        scores["METEOR"], _ = meteor_scorer().compute_score(references, outputs)
        scores["ROUGE_L"], _ = Rouge().compute_score(references, outputs)
        scores["CIDEr"], _ = Cider().compute_score(references, outputs)
    return {name: 100.0 * float(scores[name]) for name in COCO_CAPTION_METRICS}
