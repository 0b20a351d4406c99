"""VQA v2: questions + annotations files, answer normalisation, answer vocabulary.

Answer normalisation follows the official evaluator, GT-Vision-Lab/VQA
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at the current revision
``a013f0043c1e2cdc995922dfe257f7149aa9af06`` (2021-03-11, "Fixed processing
answers bug"). The normalisation itself lives in one place,
:mod:`vlbeit_keras.metrics.vqa` (tested against every case of
``../shared/fixtures/vqa_eval``); this module reuses it.

Vocabulary and soft targets (MODEL_SPEC §9.1, our documented choice): the
answer vocabulary is built from the *normalised* majority answers
(``multiple_choice_answer``), and the annotator answers are counted *after the
same normalisation*. VLMo / ViLT / BEiT-3 normalise the majority answers but
count raw annotator answers, so a question whose annotators wrote ``"Two"`` or
``"2 "`` gets no credit for the vocabulary entry ``"2"`` there; here it does,
matching what the evaluator scores. One evaluator quirk is not modelled: when
all 10 raw answers are identical, the evaluator compares the prediction to that
raw string without normalising it (e.g. 10 x ``"Yes"`` needs ``"Yes"``); such
answers are rare in VQA v2, whose answers are already lower-cased.
"""

import collections
import os

import numpy as np

from vlbeit_keras.data.readers import report as rep
from vlbeit_keras.metrics.vqa import CURRENT_REVISION
from vlbeit_keras.metrics.vqa import normalize_answer

VQA_EVAL_REVISION = CURRENT_REVISION


def normalize_vqa_answer(answer):
    """Normalise an answer string as the official VQA evaluator does.

    The one implementation is :func:`vlbeit_keras.metrics.vqa.normalize_answer`
    (verified against ``../shared/fixtures/vqa_eval``); this name is kept for
    the readers' API. Steps (revision :data:`VQA_EVAL_REVISION`): newlines/tabs
    -> spaces and strip; punctuation (each of ``; / [ ] " { } ( ) = + \\ _ - > <
    @ ` , ? !`` deleted if it touches a space in the original or the string has
    a digit-comma-digit, else replaced by a space); periods not followed by a
    digit deleted (at most 32, an evaluator quirk); lower-case, number words
    zero..ten and "none" -> digits, articles a/an/the dropped, contractions
    table applied; words joined by single spaces.

    Args:
        answer: str (other values are converted with ``str``).

    Returns:
        str, the normalised answer (may be empty).

    Examples:
        ``"Two dogs."`` -> ``"2 dogs"``; ``"t-shirt"`` -> ``"t shirt"``;
        ``"1,000"`` -> ``"1000"``; ``"dont"`` -> ``"don't"``.
    """
    return normalize_answer(str(answer))


def vqa_soft_score(count):
    """VQA soft target for ``count`` matching annotator answers (MODEL_SPEC §9.1).

    0 -> 0.0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >= 4 -> 1.0 (the evaluator's
    accuracy for that many matching answers out of 10, VLMo/ViLT ``get_score``).
    """
    count = int(count)
    if count <= 0:
        return 0.0
    return (0.3, 0.6, 0.9)[count - 1] if count < 4 else 1.0


def read_vqa_v2(
    questions_file,
    annotations_file=None,
    image_root=None,
    *,
    split=None,
    image_template=None,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read VQA v2 questions (and annotations when given), one record per question.

    Format (Goyal et al. 2017, https://visualqa.org):
    ``v2_OpenEnded_mscoco_<subtype>_questions.json`` = ``{"data_subtype",
    "questions": [{"image_id", "question", "question_id"}]}`` and
    ``v2_mscoco_<subtype>_annotations.json`` = ``{"annotations":
    [{"question_id", "image_id", "multiple_choice_answer", "answers":
    [{"answer", "answer_confidence", "answer_id"}] x 10, "answer_type",
    "question_type"}]}``. Test splits ship no annotations.

    Args:
        questions_file: path of the questions JSON.
        annotations_file: path of the annotations JSON, or None (test sets).
        image_root: folder of the COCO images of this subtype (e.g.
            ``train2014/``); None: the questions file's folder.
        split: str stored in records; default: the file's ``data_subtype``
            (``"train2014"``, ``"val2014"``, ``"test-dev2015"``...).
        image_template: file name template with ``{subtype}`` and
            ``{image_id}`` fields; default
            ``"COCO_{subtype}_{image_id:012d}.jpg"``, where ``test-dev2015``
            images live under the ``test2015`` name.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"image": str, "text": str question,
        "image_id": str, "question_id": int, "split": str, "source":
        "<questions file>#questions[i]"}`` plus, with annotations,
        ``"answers"`` (list of the 10 raw annotator answers, in ``answer_id``
        order), ``"answer"`` (the raw ``multiple_choice_answer``),
        ``"answer_type"``, ``"question_type"``. Questions without an
        annotation entry are skipped ("missing annotation").

    Raises:
        FileNotFoundError, DataError: as in :func:`read_coco_captions`.
    """
    report = rep.make_report(report, strict)
    start = report.count
    qpath = os.fspath(questions_file)
    qdata = rep.load_json(qpath, "VQA questions file")
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise rep.DataError(f"VQA questions file {qpath} must be a JSON object with a 'questions' list.")
    subtype = qdata.get("data_subtype") or rep.split_from_name(
        qpath, [r"_((?:train|val|test-dev|test)\d{4})_"]
    )
    if split is None:
        split = subtype
    image_subtype = "test2015" if subtype and subtype.startswith("test-dev") else subtype
    template = image_template or "COCO_{subtype}_{image_id:012d}.jpg"
    image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(qpath)

    annotations = None
    if annotations_file is not None:
        apath = os.fspath(annotations_file)
        adata = rep.load_json(apath, "VQA annotations file")
        if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
            raise rep.DataError(
                f"VQA annotations file {apath} must be a JSON object with an 'annotations' list."
            )
        annotations = {}
        for i, ann in enumerate(adata["annotations"]):
            if isinstance(ann, dict) and "question_id" in ann:
                annotations[ann["question_id"]] = (f"{apath}#annotations[{i}]", ann)

    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    for i, q in enumerate(qdata["questions"]):
        source = f"{qpath}#questions[{i}]"
        question_id = rep.expect_key(q, "question_id", source, report, int)
        image_id = rep.expect_key(q, "image_id", source, report, int)
        if question_id is None or image_id is None:
            continue
        text = rep.check_text(q.get("question"), source, "question", report, max_text_chars)
        if text is None:
            continue
        record = {
            "image": os.path.join(
                image_root, template.format(subtype=image_subtype, image_id=image_id)
            ),
            "text": text,
            "image_id": str(image_id),
            "question_id": question_id,
            "split": split,
            "source": source,
        }
        if annotations is not None:
            if question_id not in annotations:
                report.skip(source, "question_id", "missing annotation", f"question_id {question_id}")
                continue
            a_source, ann = annotations[question_id]
            answers = ann.get("answers")
            if not isinstance(answers, list) or not answers or not all(
                isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers
            ):
                report.skip(a_source, "answers", "malformed answers", "expected a list of {'answer': str}")
                continue
            answers = sorted(answers, key=lambda a: a.get("answer_id", 0))
            record["answers"] = [a["answer"] for a in answers]
            record["answer"] = ann.get("multiple_choice_answer")
            record["answer_type"] = ann.get("answer_type")
            record["question_type"] = ann.get("question_type")
        if not checker.check(record["image"], source, "image_id", report):
            continue
        records.append(record)
    return rep.finish(records, report, start, {"data_subtype": subtype})


def _majority(record):
    answer = record.get("answer")
    if isinstance(answer, str):
        return answer
    answers = record.get("answers") or []
    if not answers:
        return None
    counts = collections.Counter(normalize_vqa_answer(a) for a in answers)
    return max(sorted(counts), key=counts.__getitem__)


def build_answer_vocab(records, min_count=9, max_size=None, normalize=normalize_vqa_answer):
    """Answer vocabulary from the majority answers of ``records``.

    VLMo / ViLT recipe (MODEL_SPEC §9.1): count the normalised majority answer
    (``record["answer"]``, else the most frequent normalised entry of
    ``record["answers"]``) of every question, keep answers seen at least
    ``min_count`` times. On VQA v2 train + val with ``min_count=9`` this gives
    the 3,129-answer vocabulary.

    Args:
        records: iterable of records from :func:`read_vqa_v2` (or
            :func:`read_daquar`, any records with ``answer``/``answers``).
        min_count: int, minimum frequency.
        max_size: int or None, keep at most this many (most frequent).
        normalize: callable str -> str (default :func:`normalize_vqa_answer`).

    Returns:
        list of str, most frequent first, ties broken alphabetically (so the
        order, hence label ids, is deterministic). Empty answers are dropped.
    """
    counts = collections.Counter()
    for record in records:
        answer = _majority(record)
        if answer is None:
            continue
        answer = normalize(answer)
        if answer:
            counts[answer] += 1
    vocab = [a for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    if max_size is not None:
        vocab = vocab[:max_size]
    return vocab


def answer_targets(answers, answer_to_id, normalize=normalize_vqa_answer):
    """Soft targets of one question: ``(labels, scores)``.

    Counts the normalised annotator answers, keeps those in the vocabulary,
    and scores each with :func:`vqa_soft_score`.

    Args:
        answers: list of raw annotator answers (10 for VQA v2).
        answer_to_id: dict answer -> label id.

    Returns:
        (list of int label ids, list of float scores), sorted by label id;
        both empty when no answer is in the vocabulary.
    """
    counts = collections.Counter(normalize(a) for a in answers)
    pairs = sorted(
        (answer_to_id[a], vqa_soft_score(n)) for a, n in counts.items() if a in answer_to_id
    )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def attach_answer_targets(
    records,
    vocab,
    *,
    drop_unknown=True,
    strict=False,
    report=None,
    normalize=normalize_vqa_answer,
):
    """Add soft answer targets to question records.

    Each returned record is a copy with ``"labels"`` (list of int answer ids)
    and ``"scores"`` (list of float soft scores, see :func:`answer_targets`).
    A question none of whose answers is in ``vocab`` is an "unknown answer":
    for training it is skipped with a counted warning (VLMo drops them too);
    with ``drop_unknown=False`` (evaluation) it is kept with empty targets.

    Args:
        records: records with ``answers`` (list of str).
        vocab: list of answers (index = label id), e.g. from
            :func:`build_answer_vocab`.
        drop_unknown: skip questions with no answer in the vocabulary.
        strict, report: as for the readers (stage ``"targets"``).
        normalize: answer normaliser.

    Returns:
        :class:`RecordList` with ``info["vocab_size"]``.
    """
    report = rep.make_report(report, strict)
    start = report.count
    answer_to_id = {a: i for i, a in enumerate(vocab)}
    out = []
    for record in records:
        answers = record.get("answers")
        source = record.get("source", "?")
        if not isinstance(answers, list):
            report.skip(source, "answers", "missing field", stage="targets")
            continue
        labels, scores = answer_targets(answers, answer_to_id, normalize)
        if not labels and drop_unknown:
            report.skip(
                source, "answers", "unknown answer",
                f"none of {sorted(set(answers))[:5]} is in the answer vocabulary",
                stage="targets",
            )
            continue
        new = dict(record)
        new["labels"] = labels
        new["scores"] = scores
        out.append(new)
    return rep.finish(out, report, start, {"vocab_size": len(vocab)})


def answer_target_vector(labels, scores, num_answers):
    """Dense soft-target vector (num_answers,) float32 from ``labels``/``scores``."""
    target = np.zeros((num_answers,), "float32")
    if len(labels):
        target[np.asarray(labels, "int64")] = np.asarray(scores, "float32")
    return target
