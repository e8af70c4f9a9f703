"""VQAv2 accuracy with the rules of the official evaluation script (GT-Vision-Lab ``vqaEval.py``).

Quirks of the official ``evaluate`` that change scores, all kept on purpose:

* every text (prediction and human answers) first loses ``\\n``/``\\t`` (made spaces) and its
  outer whitespace;
* only when the humans disagree (more than one distinct answer) are *both* the human answers and
  the prediction normalised (punctuation, then digits/articles/contractions); when all agree, the
  stripped prediction is compared with their answer as it is (case and punctuation count);
* punctuation is deleted (not spaced) when it touches a space anywhere in the text or when the
  text holds a ``digit,digit`` group; the check looks at the input, not the text being edited;
* a period is dropped unless a digit follows it, at most 32 times (the script passes
  ``re.UNICODE`` where ``re.sub`` expects its ``count``);
* the contraction table only adds apostrophes (``dont`` -> ``don't``) and has a few odd entries
  (capitalised keys that can never match after lower-casing, ``somebody'd`` -> ``somebodyd``);
* accuracy is the mean over the 10 leave-one-out subsets of ``min(#matches / 3, 1)``. The script
  leaves out every answer record equal to the current one; VQAv2 records carry distinct
  ``answer_id`` values, so that is exactly one, which is what :func:`accuracy` does by position.

The official script scores the raw prediction; LLaVA's evaluation first runs the EvalAI answer
processor on the model's text (:func:`process_answer`), and the VQAv2 task does the same before
calling :func:`accuracy`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
               "`", ",", "?", "!")
# the official lookahead typo, kept: "." not before a digit
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD_MAX_SUBS = int(re.UNICODE)  # 32: the official script passes re.UNICODE as re.sub's count


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: delete or space out punctuation, drop periods."""
    out = text
    glue = _DIGIT_COMMA.search(text) is not None
    for mark in PUNCTUATION:
        if glue or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_SUBS)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles,
    then restore apostrophes from the contraction table."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def strip_text(text: str) -> str:
    """The official first step for every answer: newlines and tabs to spaces, outer space off."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize(answer: str) -> str:
    """An answer stripped, then through :func:`process_punctuation` and
    :func:`process_digit_article` (what the official script does to every answer when the humans
    disagree).

    >>> normalize("Two dogs.")
    '2 dogs'
    """
    return process_digit_article(process_punctuation(strip_text(answer)))


def process_answer(answer: str) -> str:
    """The EvalAI answer processor LLaVA's VQAv2 evaluation applies to the model's raw text:
    lower-case, drop commas and question marks, split off ``'s``, then :func:`normalize`."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize(text)


def accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Per-question VQA accuracy in [0, 1], exactly as ``vqaEval.py`` computes it.

    Args:
        prediction: the answer to score (the task passes it through :func:`process_answer` first).
        human_answers: the annotators' answers (10 in VQAv2), as stored in the annotations file.

    Returns:
        The mean over each left-out annotator of ``min(1, matches among the other ones / 3)``.

    >>> accuracy("2", ["2"] * 3 + ["3"] * 7)  # 3 of 10 said "2"
    0.9
    >>> accuracy("Yes", ["yes"] * 10)  # all agree: compared as is
    0.0
    """
    if not human_answers:
        raise ValueError("accuracy() needs at least one human answer")
    pred = strip_text(prediction)
    gts = [strip_text(a) for a in human_answers]
    if len(set(gts)) > 1:
        gts = [normalize(a) for a in gts]
        pred = normalize(pred)
    scores = []
    for left_out in range(len(gts)):
        matches = sum(1 for i, a in enumerate(gts) if i != left_out and a == pred)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)
