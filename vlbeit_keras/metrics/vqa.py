"""VQA accuracy exactly as the official VQA v2 evaluator computes it.

The official evaluator is ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of
https://github.com/GT-Vision-Lab/VQA. Two revisions differ (see
``docs/finetuning.md``):

- ``"current"`` (default): branch ``master`` at
  ``a013f0043c1e2cdc995922dfe257f7149aa9af06`` (2021-03-11, "Fixed processing
  answers bug"). Ground-truth and predicted answers are whitespace-cleaned;
  when the ten ground-truth answers are not all identical, both sides are
  normalised (punctuation, periods, lower case, number words, articles,
  contractions); when they are identical, nothing is normalised and the
  prediction must match character for character.
- ``"pre2021"``: the parent revision
  ``a4f1afd59cfda2f1a7f7f720f40bfea2e338c6ad`` (vqaEval.py last changed in
  2016). The prediction is always normalised; ground-truth answers are never
  whitespace-stripped and, when not all identical, get only the punctuation
  and period steps. The Python-3 port in ``salesforce-lavis`` follows this
  revision.

The official code runs on Python 2.7 only. Where Python 3 differs (``\\d``
matches non-ASCII digits, ``str.split``/``strip`` no longer treat U+180E as
whitespace), this module reproduces the Python 2.7 behaviour: regexes are
ASCII-only and U+180E counts as whitespace.

Per question: for each of the ``n`` annotators (10 in VQA v2), count the
other ``n - 1`` ground-truth answers equal to the prediction and score
``min(1, count / 3)``; the accuracy is the mean of those ``n`` terms, summed
in annotator order as the official code does. The dataset accuracy is the
mean over questions (the official report multiplies by 100 and rounds to 2
decimals).
"""

import re

CURRENT_REVISION = "a013f0043c1e2cdc995922dfe257f7149aa9af06"
PRE2021_REVISION = "a4f1afd59cfda2f1a7f7f720f40bfea2e338c6ad"
REVISIONS = {"current": CURRENT_REVISION, "pre2021": PRE2021_REVISION}

# Tables of the official evaluator (vqaEval.py, both revisions).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")

# ``re.ASCII``: Python 2's ``\d`` on unicode strings without re.UNICODE is [0-9].
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)
# Official pattern; ``(?!<=\d)`` is a (always true) lookahead, kept verbatim.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
# The official call passes re.UNICODE (= 32) in the position of `count`.
_PERIOD_STRIP_COUNT = 32
# Whitespace that Python 2.7's unicode.split()/strip() use but Python 3's do not.
_PY2_ONLY_WHITESPACE = "\u180e"


def _py2_strip(text):
    """``unicode.strip()`` as in Python 2.7 (U+180E is whitespace there)."""
    while True:
        stripped = text.strip().strip(_PY2_ONLY_WHITESPACE)
        if stripped == text:
            return text
        text = stripped


def _py2_split(text):
    """``unicode.split()`` as in Python 2.7."""
    return text.replace(_PY2_ONLY_WHITESPACE, " ").split()


def _clean_whitespace(text):
    """Official step 1: newline and tab -> space, then strip."""
    return _py2_strip(text.replace("\n", " ").replace("\t", " "))


def process_punctuation(text):
    """The official ``processPunctuation`` (punctuation, then periods).

    Each punctuation character is deleted when the input has it next to a
    space or contains a ``digit,digit`` sequence anywhere, otherwise replaced
    by a space; then every period not followed by a digit is deleted (at most
    32, an official quirk).
    """
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text):
    """The official ``processDigitArticle``: lower case, number words ->
    digits, drop articles, restore contractions, join with single spaces."""
    words = []
    for word in _py2_split(text.lower()):
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(answer):
    """Full official normalisation of one answer string (steps 1 and 3).

    This is what the current revision applies to a prediction and to every
    ground-truth answer when the ground-truth answers are not all identical.
    Use it to build answer vocabularies so that labels and the metric agree.

    Args:
        answer: str.

    Returns:
        str, the normalised answer (e.g. ``"Two dogs."`` -> ``"2 dogs"``).
    """
    return process_digit_article(process_punctuation(_clean_whitespace(answer)))


def _check_answers(prediction, gt_answers):
    if not isinstance(prediction, str):
        raise TypeError(f"The predicted answer must be a str; got {type(prediction).__name__}.")
    if isinstance(gt_answers, str) or len(gt_answers) == 0:
        raise ValueError(
            "`gt_answers` must be a non-empty list of answer strings (10 in VQA v2); "
            f"got {gt_answers!r}."
        )
    for i, answer in enumerate(gt_answers):
        if not isinstance(answer, str):
            raise TypeError(f"Ground-truth answer {i} is not a str: {answer!r}.")


def vqa_accuracy(prediction, gt_answers, revision="current"):
    """Per-question VQA accuracy as the official evaluator computes it.

    Args:
        prediction: str, the model's answer exactly as written to the results
            file.
        gt_answers: sequence of str, the human answers in annotator order
            (answer_id 1..10 in VQA v2; any number >= 1 is accepted).
        revision: ``"current"`` (official master, a013f00) or ``"pre2021"``
            (a4f1afd); see the module docstring.

    Returns:
        float in [0, 1], unrounded (the official per-question value before
        ``round(100 * acc, 2)``): 0, 0.3, 0.6, 0.9 or 1.0 for 0, 1, 2, 3, >= 4
        matching answers among ten, summed in annotator order.

    Raises:
        ValueError: unknown revision or empty ``gt_answers``.
        TypeError: a non-string answer.
    """
    _check_answers(prediction, gt_answers)
    if revision == "current":
        gts = [_clean_whitespace(a) for a in gt_answers]
        res = _clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [process_digit_article(process_punctuation(a)) for a in gts]
            res = process_digit_article(process_punctuation(res))
    elif revision == "pre2021":
        res = process_digit_article(process_punctuation(_clean_whitespace(prediction)))
        gts = list(gt_answers)
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    else:
        raise ValueError(
            f"Unknown VQA evaluator revision {revision!r}; expected one of {sorted(REVISIONS)}."
        )
    total = 0
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == res)
        total += min(1, float(matches) / 3)
    return float(total) / len(gts)


def vqa_soft_scores(gt_answers, candidates=None, revision="current"):
    """Soft target scores: the official accuracy each candidate answer would get.

    Used to build VQA training targets so that the loss optimises exactly
    the evaluation metric (1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >= 4 -> 1.0 matches
    among ten annotators, after the evaluator's normalisation).

    Args:
        gt_answers: sequence of str, the annotators' answers.
        candidates: iterable of str answers to score, or None for the
            normalised and the cleaned raw ground-truth answers.
        revision: evaluator revision.

    Returns:
        dict str -> float, only the candidates with a score > 0.
    """
    if candidates is None:
        candidates = {normalize_answer(a) for a in gt_answers}
        candidates |= {_clean_whitespace(a) for a in gt_answers}
    scores = {}
    for answer in candidates:
        score = vqa_accuracy(answer, gt_answers, revision)
        if score > 0:
            scores[answer] = score
    return scores


def evaluate_vqa(predictions, references, revision="current"):
    """Dataset-level VQA accuracy from predictions and annotations.

    Args:
        predictions: dict question_id -> predicted answer str, or the official
            results list ``[{"question_id": int, "answer": str}, ...]``.
        references: dict question_id -> list of ground-truth answer strings.
        revision: evaluator revision.

    Returns:
        dict with ``accuracy`` (mean per-question accuracy, fraction, unrounded),
        ``accuracy_percent`` (the official ``round(100 * mean, 2)``),
        ``num_questions`` and ``per_question`` (question_id -> accuracy).

    Raises:
        ValueError: a referenced question has no prediction (lists up to 10
            missing ids), or the results list has a duplicate question id.
    """
    if not isinstance(predictions, dict):
        as_dict = {}
        for i, item in enumerate(predictions):
            try:
                qid, answer = item["question_id"], item["answer"]
            except (KeyError, TypeError):
                raise ValueError(
                    f"Result {i} is not a {{'question_id', 'answer'}} object: {item!r}."
                ) from None
            if qid in as_dict:
                raise ValueError(f"Duplicate question_id {qid!r} in the results (entry {i}).")
            as_dict[qid] = answer
        predictions = as_dict
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(references)} questions have no prediction, "
            f"e.g. question_id {missing[:10]}."
        )
    per_question = {
        qid: vqa_accuracy(predictions[qid], answers, revision)
        for qid, answers in references.items()
    }
    mean = float(sum(per_question.values())) / max(len(per_question), 1)
    return {
        "accuracy": mean,
        "accuracy_percent": round(100 * mean, 2),
        "num_questions": len(per_question),
        "per_question": per_question,
    }
