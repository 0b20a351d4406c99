"""VQA v2 fine-tuning: classifier over an answer vocabulary with soft scores.

Follows VLMo (``objectives.py`` ``compute_vqa``, ``vlmo_module.py``
``vqa_classifier``, MODEL_SPEC §9.1):

- pooled [T_CLS] of the fused encoding -> Dense(d -> 2d) -> LayerNorm(1e-5)
  -> exact GELU -> Dense(2d -> A), A = answer vocabulary size (3,129 for
  VQA v2; any size);
- targets are soft scores in [0, 1] per answer; the loss is sigmoid binary
  cross-entropy averaged over all B x A entries, times A (= summed over
  answers, averaged over the batch; :class:`VQASoftScoreLoss`);
- prediction = arg-max answer; evaluation with the official VQA accuracy
  (:mod:`vlbeit_keras.metrics.vqa`, revision pinned, default current
  master a013f00); predictions exported in the official results format
  ``[{"question_id": ..., "answer": "..."}]``.

Labels use the evaluator's own normalisation (decided explicitly; the
VLMo/ViLT and BEiT-3 builders normalise majority answers but count raw
annotator answers, so some valid answers get no label): the vocabulary is
built from normalised majority answers, and the soft score of every
candidate answer is the official accuracy it would get
(:func:`vlbeit_keras.metrics.vqa.vqa_soft_scores`): 0.3 / 0.6 / 0.9 / 1.0
for 1 / 2 / 3 / >= 4 matching annotators. Questions with a single answer
(e.g. DAQUAR) cannot use the leave-one-out formula, which gives 0 with no
other annotator; their target is 1.0 for the normalised answer and their
metric is exact match after normalisation.
"""

import collections
import warnings

import keras
import numpy as np
from keras import ops

from vlbeit_keras.metrics.vqa import evaluate_vqa
from vlbeit_keras.metrics.vqa import normalize_answer
from vlbeit_keras.metrics.vqa import vqa_soft_scores
from vlbeit_keras.metrics.vqa_score import VQAScore
from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier

# Max. distinct answers with a non-zero score per question (10 annotators).
MAX_SCORED_ANSWERS = 10


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VQASoftScoreLoss(keras.losses.Loss):
    """Sigmoid BCE with soft targets, summed over answers (VLMo / BAN).

    ``mean over batch of sum over answers of BCE(y_pred, y_true)``, which is
    VLMo's ``binary_cross_entropy_with_logits(logits, targets) * A`` (mean
    over all entries times the number of answers). Computed in float32.

    Args:
        name: loss name.
        reduction: Keras reduction over the batch (default mean).

    ``call(y_true, y_pred)``: ``y_true`` float (B, A) soft scores in [0, 1],
    ``y_pred`` float (B, A) logits -> float32 (B,).
    """

    def __init__(self, name="vqa_soft_score_loss", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        bce = ops.binary_crossentropy(y_true, y_pred, from_logits=True)
        return ops.sum(bce, axis=-1)


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTVQA(VLBEiTImageTextClassifier):
    """VQA classifier over an answer vocabulary.

    Args:
        backbone: ``VLBEiTBackbone``.
        answer_vocabulary: list of answer strings (index = class id), or
            None with ``num_answers``. Stored in the config, so a saved model
            can write answers (3,129 short strings, ~30 KB).
        num_answers: int, when no vocabulary is given.
        head_hidden_dim: MLP width (default 2d).
        head_layer_norm_epsilon: 1e-5.

    Inputs: as :class:`VLBEiTImageTextClassifier` (question tokens, image).

    Returns:
        float logits (B, num_answers).

    Default compile: :class:`VQASoftScoreLoss`, :class:`VQAScore`, AdamW
    lr 3e-5 with the head at lr x 20 (VLMo ``lr_mult``), wd 0.01.

    Raises:
        ValueError: neither or inconsistent ``answer_vocabulary`` /
            ``num_answers``, or duplicate answers.
    """

    default_learning_rate = 3e-5
    default_head_lr_multiplier = 20.0

    def __init__(self, backbone, answer_vocabulary=None, num_answers=None, **kwargs):
        if answer_vocabulary is not None:
            answer_vocabulary = [str(a) for a in answer_vocabulary]
            duplicates = [a for a, c in collections.Counter(answer_vocabulary).items() if c > 1]
            if duplicates:
                raise ValueError(f"Duplicate answers in the vocabulary: {duplicates[:5]}.")
            if num_answers is not None and num_answers != len(answer_vocabulary):
                raise ValueError(
                    f"num_answers={num_answers} disagrees with the vocabulary size "
                    f"{len(answer_vocabulary)}."
                )
            num_answers = len(answer_vocabulary)
        if num_answers is None:
            raise ValueError("Give `answer_vocabulary` or `num_answers`.")
        kwargs.pop("num_classes", None)
        super().__init__(backbone, num_classes=int(num_answers), **kwargs)
        self.answer_vocabulary = answer_vocabulary
        self.num_answers = int(num_answers)

    def default_loss(self):
        return VQASoftScoreLoss()

    def chance_losses(self, batch_size=None):
        """None: the soft-score loss has no input-free constant worth watching
        (its prior value depends on the answer frequencies)."""
        return {}

    def default_metrics(self):
        return [VQAScore()]

    def answers(self, logits):
        """Arg-max answers (list of str) for logits (B, A)."""
        if self.answer_vocabulary is None:
            raise ValueError("This model has no answer vocabulary; pass one at construction.")
        index = np.asarray(keras.ops.convert_to_numpy(logits)).argmax(-1)
        return [self.answer_vocabulary[i] for i in index]

    def get_config(self):
        config = super().get_config()
        config.pop("num_classes")
        config.update(
            {"answer_vocabulary": self.answer_vocabulary, "num_answers": self.num_answers}
        )
        return config


# ---------------------------------------------------------------------------
def majority_answer(answers):
    """Most frequent normalised answer (ties: first in annotator order)."""
    normalised = [normalize_answer(a) for a in answers]
    counts = collections.Counter(normalised)
    best = max(counts.values())
    return next(a for a in normalised if counts[a] == best)


def build_answer_vocabulary(answer_lists, min_count=9, max_size=None):
    """Answer vocabulary from the normalised majority answer of each question.

    VLMo / ViLT keep the majority answers with frequency >= 9 over train +
    val (3,129 answers for VQA v2). Here majority answers are normalised with
    the official evaluator's rule, so vocabulary entries can match
    normalised annotator answers.

    Args:
        answer_lists: iterable of per-question answer lists.
        min_count: keep answers that are the majority answer of at least
            this many questions (use 1 for small data).
        max_size: optional cap (most frequent first).

    Returns:
        list of str, ordered by descending count, then alphabetically.
    """
    counts = collections.Counter(majority_answer(a) for a in answer_lists if len(a))
    kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return kept[:max_size] if max_size else kept


def answer_targets(answers, vocabulary_index):
    """Sparse soft targets of one question.

    Args:
        answers: the annotators' answers.
        vocabulary_index: dict answer -> class id.

    Returns:
        (labels int list, scores float list), in-vocabulary answers with a
        score > 0: official soft scores with >= 2 answers, 1.0 for the
        normalised answer with one.
    """
    if len(answers) == 1:
        answer = normalize_answer(answers[0])
        scored = {answer: 1.0}
    else:
        scored = vqa_soft_scores(answers)
    labels, scores = [], []
    for answer, score in sorted(scored.items()):
        if answer in vocabulary_index and vocabulary_index[answer] not in labels:
            labels.append(vocabulary_index[answer])
            scores.append(score)
    return labels, scores


def _vocabulary(answer_vocabulary):
    if not answer_vocabulary:
        raise ValueError("The VQA task needs `answer_vocabulary` (see build_answer_vocabulary).")
    return {a: i for i, a in enumerate(answer_vocabulary)}


def _sparse_targets(records, answer_vocabulary, drop_unanswerable, source):
    """(kept records, float32 (n, 2, MAX_SCORED_ANSWERS) [label ids; scores])."""
    index = _vocabulary(answer_vocabulary)
    kept, packed = [], []
    for i, r in enumerate(records):
        answers = task_data.field(r, "answers", i, source)
        if isinstance(answers, str) or not answers or not all(isinstance(a, str) for a in answers):
            raise task_data.RecordError(
                f"{source + ', ' if source else ''}record {i}: field 'answers' must be a "
                f"non-empty list of strings; got {answers!r:.80}."
            )
        labels, scores = answer_targets(list(answers), index)
        if drop_unanswerable and not labels:
            continue
        labels, scores = labels[:MAX_SCORED_ANSWERS], scores[:MAX_SCORED_ANSWERS]
        pad = MAX_SCORED_ANSWERS - len(labels)
        kept.append(r)
        packed.append([labels + [0] * pad, scores + [0.0] * pad])
    if len(kept) < len(records):
        warnings.warn(
            f"VQA: dropped {len(records) - len(kept)} of {len(records)} questions with no "
            f"answer in the {len(answer_vocabulary)}-answer vocabulary ({source or 'records'}).",
            stacklevel=3,
        )
    if not kept:
        raise ValueError(f"No VQA records left to build a dataset ({source or 'records'}).")
    return kept, np.array(packed, dtype=np.float32).reshape(len(kept), 2, MAX_SCORED_ANSWERS)


def make_dataset(
    records,
    *,
    tokenizer,
    image_config,
    text_length,
    batch_size,
    answer_vocabulary,
    training=False,
    seed=0,
    start_step=0,
    report=None,
    drop_unanswerable=None,
    source=None,
    **unused,
):
    """Records (``image``, ``text`` question, ``answers``) -> batches of (x, y).

    ``y`` is float32 (B, A) soft scores, expanded in the pipeline from at most
    10 (label, score) pairs per question (no dense N x A array in memory).

    Args:
        answer_vocabulary: list of answers (class order).
        drop_unanswerable: drop questions with no in-vocabulary answer
            (default: when ``training``, as VLMo). The count is warned.
        Other arguments: see :mod:`vlbeit_keras.tasks.data`.
    """
    import tensorflow as tf

    records = task_data.require(records, source)
    task_data.check_text(records, source)
    drop = training if drop_unanswerable is None else drop_unanswerable
    kept, packed = _sparse_targets(records, answer_vocabulary, drop, source)
    num_answers = len(answer_vocabulary)
    ds = task_data.image_text_dataset(
        kept, tokenizer=tokenizer, image_config=image_config, text_length=text_length,
        batch_size=batch_size, labels=packed, training=training, seed=seed,
        start_step=start_step, report=report, image_key="image",
    )

    def densify(x, y):
        one_hot = tf.one_hot(tf.cast(y[:, 0], "int32"), num_answers, dtype="float32")
        return x, tf.reduce_sum(one_hot * y[:, 1, :, None], axis=1)

    return ds.map(densify, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_model(backbone, answer_vocabulary=None, num_answers=None, image_size=None,
                head_hidden_dim=None, resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """VQA model on ``backbone`` (resized to ``image_size``), compiled."""
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, method=resize_method
    )
    model = VLBEiTVQA(
        backbone, answer_vocabulary=answer_vocabulary, num_answers=num_answers,
        head_hidden_dim=head_hidden_dim,
    )
    model.compile()
    return model


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, revision="current",
             report=None, source=None, **config):
    """Official VQA accuracy and exact match; predictions in results format.

    Returns:
        (metrics, predictions): ``metrics`` = ``vqa_accuracy`` (mean official
        per-question accuracy, fraction; questions with a single answer are
        scored by exact match instead), ``exact_match`` (normalised
        prediction == normalised majority answer), ``num_questions``;
        ``predictions`` = ``[{"question_id", "answer"}]`` in record order.
    """
    from vlbeit_keras.tasks.image_text_classification import predict_logits

    records = task_data.require(records, source)
    for i, r in enumerate(records):
        task_data.field(r, "answers", i, source)
    logits = predict_logits(model, records, tokenizer=tokenizer, image_config=image_config,
                            batch_size=batch_size, report=report, source=source)
    return score_answers(records, model.answers(logits), revision=revision, source=source)


def score_answers(records, answers, revision="current", source=None):
    """Score predicted answers as :func:`evaluate` does (no model needed).

    Args:
        records: VQA records with ``answers`` (and ``question_id``).
        answers: list of str, one predicted answer per record.
        revision: VQA evaluator revision.

    Returns:
        (metrics, predictions) as :func:`evaluate`.

    Raises:
        ValueError: ``answers`` and ``records`` differ in length.
    """
    records = task_data.require(records, source)
    if len(answers) != len(records):
        raise ValueError(f"{len(answers)} answers for {len(records)} records.")
    predictions, references, exact, single = [], {}, [], {}
    for i, (r, answer) in enumerate(zip(records, answers)):
        qid = r.get("question_id", i)
        predictions.append({"question_id": qid, "answer": answer})
        gts = list(task_data.field(r, "answers", i, source))
        exact.append(normalize_answer(answer) == majority_answer(gts))
        if len(gts) == 1:
            single[qid] = float(exact[-1])
        else:
            references[qid] = gts
    per_question = dict(single)
    if references:
        scored = evaluate_vqa(
            {p["question_id"]: p["answer"] for p in predictions if p["question_id"] in references},
            references, revision=revision,
        )
        per_question.update(scored["per_question"])
    accuracy = float(sum(per_question.values())) / max(len(per_question), 1)
    metrics = {
        "vqa_accuracy": accuracy,
        "exact_match": float(np.mean(exact)) if exact else 0.0,
        "num_questions": len(records),
    }
    return metrics, predictions


def most_frequent_answer(records, source=None):
    """The most frequent normalised majority answer of ``records`` (ties:
    alphabetical order), the "most-frequent answer" baseline's prediction."""
    counts = collections.Counter(
        majority_answer(task_data.field(r, "answers", i, source)) for i, r in enumerate(records)
    )
    best = max(counts.values())
    return min(a for a, c in counts.items() if c == best)


def baseline(train_records, eval_records, revision="current", **config):
    """Most-frequent-answer baseline: the most frequent (normalised majority)
    answer of ``train_records`` for every question of ``eval_records``,
    scored as :func:`evaluate`. Returns the metrics dict plus ``answer``."""
    answer = most_frequent_answer(task_data.require(train_records, "training records"))
    eval_records = task_data.require(eval_records, "evaluation records")
    metrics, _ = score_answers(eval_records, [answer] * len(eval_records), revision=revision)
    return {**metrics, "answer": answer}


def export_predictions(predictions, path):
    """Write the official results JSON ``[{"question_id": int, "answer": str}]``."""
    out = []
    for p in predictions:
        qid = p["question_id"]
        if isinstance(qid, (np.integer,)):
            qid = int(qid)
        out.append({"question_id": qid, "answer": str(p["answer"])})
    return task_data.write_json(out, path)


def example(num_records, image_size, seed=0):
    """Synthetic VQA records with 10 annotator answers and a vocabulary."""
    rng = np.random.default_rng(seed)
    choices = ["red", "blue", "green", "2", "yes"]
    records = []
    for i in range(num_records):
        answers = list(rng.choice(choices, size=10, p=[0.4, 0.3, 0.1, 0.1, 0.1]))
        records.append({"image": random_image(rng, image_size), "text": random_sentence(rng),
                        "answers": answers, "question_id": 1000 + i})
    vocabulary = build_answer_vocabulary([r["answers"] for r in records], min_count=1)
    return records, {"answer_vocabulary": vocabulary, "image_size": tuple(image_size)}


TASK = TaskSpec(
    name="vqa",
    description="VQA v2: pooled [T_CLS] -> MLP -> answer vocabulary; soft-score BCE; official VQA accuracy.",
    model_cls=VLBEiTVQA,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "text", "answers", "question_id"),
    metric_names=("vqa_accuracy", "exact_match", "num_questions"),
    default_config={
        "answer_vocabulary": None,
        "num_answers": None,
        "image_size": None,
        "head_hidden_dim": None,
        "revision": "current",
        "resize_method": DEFAULT_RESIZE_METHOD,
    },
    example=example,
    baseline=baseline,
)
