"""Image-text retrieval: dual encoder (ITC) + fused matching head (ITM).

VL-BEiT fine-tunes retrieval with ITC + ITM; at inference the dual encoder
picks the top-k candidates and the fusion encoder re-ranks them (paper Sec.
3.2, MODEL_SPEC §9.3):

- **ITC** (VLMo ``objectives.py`` ``compute_irtr``): the pooled image-only
  and text-only outputs (``image_pooled_output`` / ``text_pooled_output``:
  [I_CLS] / [T_CLS] with the backbone's ``pooling="cls"`` as VLMo, the mean
  of the tokens with ``"mean"`` / ``"text_mean"`` (the small presets); see
  docs/training_health.md) through bias-free Dense(d -> d) projections
  (``itc_image_proj`` / ``itc_text_proj``), L2-normalised; logits =
  exp(``logit_scale``) x cosine similarity, ``logit_scale`` learnable,
  initialised to log(1 / 0.07); symmetric softmax cross-entropy over the
  batch. With ``image_ids`` in the inputs, captions of the same image in a
  batch are all positives (targets spread uniformly over them), otherwise
  the diagonal; with ``text_ids`` / ``caption_ids`` (what
  :func:`make_dataset` adds) a caption that is word for word one of image
  i's own captions is a positive of image i as well. Without this,
  duplicate captions ("one circle", "two dogs playing") are sampled as ITM
  "hard negatives" of images they describe exactly; on the demo corpus
  half the rows of a batch hold such a caption, the ITM labels become
  a coin flip for matching pairs, and the head's best answer is "no match"
  everywhere (docs/training_health.md, E9).
- **ITM** (VLMo ``compute_itm_hardneg``): for each pair one hard negative
  text (per image) and one hard negative image (per text) are drawn from
  the softmax of the ITC logits with the positives (diagonal, or same image
  id) removed, with ``keras.random.categorical`` and a layer-owned
  ``SeedGenerator`` (fixed shapes, so it compiles under JAX); the 3B fused
  passes [positives, negative images, negative texts] run as one backbone
  call; Dense(d -> 2) on the pooled [T_CLS] (``itm_score``); cross-entropy
  with labels [1]*B + [0]*2B. A drawn negative that is not a true negative
  (a batch of one, or all others share the image) gets weight 0.
- **Evaluation**: dual-encoder similarity for all pairs; the fused ITM score
  re-ranks the top-k per query (k configurable, 32 by default; score =
  ITM log-odds + ITC logit, or with ``rerank_score="positive_logit"`` ALBEF's
  ITM positive logit + cosine; candidates outside the top k keep their
  dual-encoder order below all re-ranked ones); R@1/5/10 for TR and IR with
  ground truth matched by image id (:mod:`vlbeit_keras.metrics.retrieval`).

Single host only: the batch is not gathered across devices (VLMo gathers
negatives from all GPUs).
"""

import collections
import math

import keras
import numpy as np
from keras import ops

from vlbeit_keras.metrics.retrieval import retrieval_recall
from vlbeit_keras.metrics.retrieval import unique_images
from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks.base import check_inputs
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import head_initializer
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel

INPUT_KEYS = ("token_ids", "padding_mask", "images")
_MASKED_LOGIT = -1e9


def _l2_normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTRetrieval(VLBEiTTaskModel):
    """Dual encoder with contrastive loss plus a hard-negative ITM head.

    Args:
        backbone: ``VLBEiTBackbone``.
        use_itm: train (and re-rank with) the ITM head. False = ITC only
            (the released VLMo retrieval code).
        logit_scale_init: initial exp(logit_scale), 1 / 0.07.
        seed: int or None, seed of the hard-negative ``SeedGenerator``.

    Inputs (dict): ``token_ids`` int32 (B, T), ``padding_mask`` (B, T),
    ``images`` float32 (B, H, W, 3): B matching pairs; optional
    ``image_ids`` int32 (B,) (pairs sharing an id are all positives);
    optional ``text_ids`` int32 (B,) with ``caption_ids`` int32 (B, K)
    (a text that is literally a caption of image i is a positive of image
    i; :meth:`positive_mask`).

    Returns (dict): ``image_embeddings`` / ``text_embeddings`` float32
    (B, d), L2-normalised; ``logits_per_image`` float32 (B, B) (row =
    image); with ITM, ``itm_logits`` (3B, 2) for [positives, negative
    images, negative texts] and ``itm_weights`` float32 (3B,) (0 for a
    drawn negative that is not a true negative).

    The model owns its loss (``compute_loss``: ITC + ITM) and tracks
    ``itc_loss``, ``itm_loss`` and ``itm_accuracy``; compile with no loss.
    Default optimizer: AdamW lr 3e-5 (VLMo retrieval base), wd 0.01.

    Raises:
        ValueError: ``logit_scale_init`` <= 0.
    """

    def __init__(self, backbone, use_itm=True, logit_scale_init=1 / 0.07, seed=None, **kwargs):
        super().__init__(backbone, **kwargs)
        if logit_scale_init <= 0:
            raise ValueError(f"`logit_scale_init` must be > 0; got {logit_scale_init}.")
        d = self.backbone.hidden_dim
        self.use_itm = bool(use_itm)
        self.logit_scale_init = float(logit_scale_init)
        self.seed = seed
        init = head_initializer(self.backbone)
        self.itc_image_proj = keras.layers.Dense(
            d, use_bias=False, kernel_initializer=init, dtype=self.dtype_policy, name="itc_image_proj"
        )
        self.itc_text_proj = keras.layers.Dense(
            d, use_bias=False, kernel_initializer=init, dtype=self.dtype_policy, name="itc_text_proj"
        )
        self.itc_image_proj.build((None, d))
        self.itc_text_proj.build((None, d))
        self.itm_score = None
        if self.use_itm:
            self.itm_score = keras.layers.Dense(
                2, kernel_initializer=init, dtype=self.dtype_policy, name="itm_score"
            )
            self.itm_score.build((None, d))
        self.logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.logit_scale_init)),
            dtype="float32",
            name="logit_scale",
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="hard_negative_seed")
        self.itc_loss_tracker = keras.metrics.Mean(name="itc_loss")
        self.itm_loss_tracker = keras.metrics.Mean(name="itm_loss")
        self.itm_accuracy_tracker = keras.metrics.Mean(name="itm_accuracy")
        self.built = True

    # --- encoders -------------------------------------------------------
    def image_embeddings(self, images, training=None):
        """float (B, H, W, 3) -> float32 (B, d) L2-normalised ITC image features."""
        pooled = self.backbone.encode_image(images, training=training)["image_pooled_output"]
        return _l2_normalize(self.itc_image_proj(pooled))

    def text_embeddings(self, token_ids, padding_mask, training=None):
        """int (B, T), (B, T) -> float32 (B, d) L2-normalised ITC text features."""
        pooled = self.backbone.encode_text(
            token_ids, padding_mask, training=training
        )["text_pooled_output"]
        return _l2_normalize(self.itc_text_proj(pooled))

    def itm_logits(self, token_ids, padding_mask, images, training=None):
        """Fused matching logits (B, 2) for aligned (text, image) pairs; class 1 = match."""
        if self.itm_score is None:
            raise ValueError("This retrieval model was built with use_itm=False.")
        pooled = self.backbone.encode_image_text(
            token_ids, padding_mask, images, training=training
        )["pooled_output"]
        return self.itm_score(pooled)

    # --- training health ------------------------------------------------
    def health_features(self, inputs):
        """ITC ``image_embeddings`` / ``text_embeddings`` (B, d) and, with
        ITM, the fused ``itm_pooled_output`` (B, d) of the matching pairs."""
        out = {
            "image_embeddings": self.image_embeddings(inputs["images"]),
            "text_embeddings": self.text_embeddings(inputs["token_ids"], inputs["padding_mask"]),
        }
        if self.use_itm:
            out["itm_pooled_output"] = self.backbone.encode_image_text(
                inputs["token_ids"], inputs["padding_mask"], inputs["images"]
            )["pooled_output"]
        return out

    def chance_losses(self, batch_size=None):
        """``itc_loss``: ln B (identical features; needs ``batch_size``);
        ``itm_loss``: entropy of the 1 : 2 positive : negative prior,
        -(1/3 ln 1/3 + 2/3 ln 2/3) = 0.6365 (the model answering "no match"
        with probability 2/3 for every pair)."""
        out = {}
        if batch_size and batch_size > 1:
            out["itc_loss"] = math.log(batch_size)
        if self.use_itm:
            out["itm_loss"] = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)
        return out

    # --- hard negatives -------------------------------------------------
    @staticmethod
    def positive_mask(batch_size, image_ids=None, text_ids=None, caption_ids=None):
        """bool (B, B): True where image i and text j form a positive pair.

        Args:
            batch_size: B.
            image_ids: optional int (B,): pairs of one image are positives
                (without it, the diagonal only).
            text_ids: optional int (B,): id of each record's normalised
                caption text (:func:`text_ids_and_captions`).
            caption_ids: optional int (B, K): ids of *all* captions of each
                record's image in the training set, padded with -1. With
                ``text_ids``, text j is also a positive of image i when it
                is literally one of image i's captions (a duplicate caption
                of another image): such a pair is a match by the dataset's
                own annotation and must be neither a contrastive negative
                nor an ITM negative (docs/training_health.md, E9).
        """
        if image_ids is None:
            index = ops.arange(batch_size)
            mask = ops.equal(index[:, None], index[None, :])
        else:
            ids = ops.cast(image_ids, "int32")
            mask = ops.equal(ids[:, None], ids[None, :])
        if text_ids is not None and caption_ids is not None:
            text_ids = ops.cast(text_ids, "int32")
            caption_ids = ops.cast(caption_ids, "int32")
            same_text = ops.any(
                ops.equal(caption_ids[:, None, :], text_ids[None, :, None]), axis=-1
            )
            mask = ops.logical_or(mask, same_text)
        return mask

    def batch_positive_mask(self, inputs, batch_size):
        """:meth:`positive_mask` from the optional ``image_ids`` /
        ``text_ids`` / ``caption_ids`` of an input dict (bool (B, B))."""
        return self.positive_mask(
            batch_size, inputs.get("image_ids"), inputs.get("text_ids"), inputs.get("caption_ids")
        )

    def sample_hard_negatives(self, logits_per_image, positives):
        """Draw one negative text per image and one negative image per text.

        Args:
            logits_per_image: float32 (B, B) ITC logits (row = image).
            positives: bool (B, B) positive pairs, never drawn.

        Returns:
            (text_index int32 (B,), text_valid bool (B,),
             image_index int32 (B,), image_valid bool (B,)): for image i the
            drawn text ``text_index[i]``; for text j the drawn image
            ``image_index[j]``; ``*_valid`` is False only when no negative
            exists in the row (then the draw is meaningless).
        """
        logits = ops.stop_gradient(ops.cast(logits_per_image, "float32"))
        masked_i2t = ops.where(positives, _MASKED_LOGIT, logits)
        masked_t2i = ops.where(ops.transpose(positives), _MASKED_LOGIT, ops.transpose(logits))
        text_index = keras.random.categorical(masked_i2t, 1, dtype="int32", seed=self.seed_generator)[:, 0]
        image_index = keras.random.categorical(masked_t2i, 1, dtype="int32", seed=self.seed_generator)[:, 0]
        text_valid = ops.logical_not(
            ops.take_along_axis(positives, text_index[:, None], axis=1)[:, 0]
        )
        image_valid = ops.logical_not(
            ops.take_along_axis(ops.transpose(positives), image_index[:, None], axis=1)[:, 0]
        )
        return text_index, text_valid, image_index, image_valid

    # --- forward --------------------------------------------------------
    def call(self, inputs, training=None):
        check_inputs(inputs, INPUT_KEYS, type(self).__name__)
        token_ids, padding_mask, images = (
            inputs["token_ids"], inputs["padding_mask"], inputs["images"]
        )
        image_emb = self.image_embeddings(images, training=training)
        text_emb = self.text_embeddings(token_ids, padding_mask, training=training)
        scale = ops.exp(ops.cast(self.logit_scale, "float32"))
        logits = scale * ops.matmul(image_emb, ops.transpose(text_emb))
        outputs = {
            "image_embeddings": image_emb,
            "text_embeddings": text_emb,
            "logits_per_image": logits,
        }
        if not self.use_itm:
            return outputs
        batch_size = ops.shape(token_ids)[0]
        positives = self.batch_positive_mask(inputs, batch_size)
        text_index, text_valid, image_index, image_valid = self.sample_hard_negatives(
            logits, positives
        )
        all_tokens = ops.concatenate(
            [token_ids, token_ids, ops.take(token_ids, text_index, axis=0)], axis=0
        )
        all_masks = ops.concatenate(
            [padding_mask, padding_mask, ops.take(padding_mask, text_index, axis=0)], axis=0
        )
        all_images = ops.concatenate(
            [images, ops.take(images, image_index, axis=0), images], axis=0
        )
        outputs["itm_logits"] = self.itm_logits(all_tokens, all_masks, all_images, training=training)
        outputs["itm_weights"] = ops.concatenate(
            [
                ops.ones_like(ops.cast(text_valid, "float32")),
                ops.cast(image_valid, "float32"),  # row j: text j with a negative image
                ops.cast(text_valid, "float32"),  # row i: image i with a negative text
            ],
            axis=0,
        )
        return outputs

    # --- loss -----------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """ITC (+ ITM) loss from the forward outputs (no targets needed).

        ``y`` and ``sample_weight`` are ignored; regularisation losses of
        the layers are added.
        """
        logits = ops.cast(y_pred["logits_per_image"], "float32")
        batch_size = ops.shape(logits)[0]
        positives = ops.cast(
            self.batch_positive_mask(x if isinstance(x, dict) else {}, batch_size), "float32"
        )
        targets = positives / ops.sum(positives, axis=1, keepdims=True)
        targets_t = ops.transpose(positives) / ops.sum(positives, axis=0)[:, None]
        i2t = keras.losses.categorical_crossentropy(targets, logits, from_logits=True)
        t2i = keras.losses.categorical_crossentropy(targets_t, ops.transpose(logits), from_logits=True)
        itc = (ops.mean(i2t) + ops.mean(t2i)) / 2.0
        self.itc_loss_tracker.update_state(itc)
        total = itc
        if self.use_itm:
            itm_logits = ops.cast(y_pred["itm_logits"], "float32")
            weights = ops.cast(y_pred["itm_weights"], "float32")
            labels = ops.concatenate(
                [ops.ones((batch_size,), "int32"), ops.zeros((2 * batch_size,), "int32")], axis=0
            )
            per_pair = keras.losses.sparse_categorical_crossentropy(labels, itm_logits, from_logits=True)
            itm = ops.sum(per_pair * weights) / ops.maximum(ops.sum(weights), 1.0)
            correct = ops.cast(ops.equal(ops.argmax(itm_logits, axis=-1), labels), "float32")
            self.itm_loss_tracker.update_state(itm)
            self.itm_accuracy_tracker.update_state(
                ops.sum(correct * weights) / ops.maximum(ops.sum(weights), 1.0)
            )
            total = total + itm
        for loss in self.losses:
            total = total + ops.cast(loss, "float32")
        return total

    def default_optimizer(self):
        from vlbeit_keras.tasks.optimization import finetune_optimizer

        return finetune_optimizer(self, learning_rate=3e-5)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"use_itm": self.use_itm, "logit_scale_init": self.logit_scale_init, "seed": self.seed}
        )
        return config


# ---------------------------------------------------------------------------
def build_model(backbone, image_size=None, use_itm=True, negative_sampling_seed=None,
                resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """Retrieval model on ``backbone`` (resized to ``image_size``), compiled.

    ``negative_sampling_seed`` seeds the model's hard-negative ``SeedGenerator``.
    """
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, method=resize_method
    )
    model = VLBEiTRetrieval(backbone, use_itm=use_itm, seed=negative_sampling_seed)
    model.compile()
    return model


def dense_image_ids(image_ids):
    """Map arbitrary hashable image ids to int32 0..K-1 (first-seen order)."""
    mapping = {}
    return np.array([mapping.setdefault(i, len(mapping)) for i in image_ids], dtype=np.int32)


def normalize_caption(text):
    """Caption key for duplicate detection: lower case, single spaces."""
    return " ".join(str(text).lower().split())


def text_ids_and_captions(texts, image_ids):
    """Dense caption-text ids and, per record, the ids of its image's captions.

    Args:
        texts: N caption strings.
        image_ids: N image ids (any hashable), aligned with ``texts``.

    Returns:
        (text_ids int32 (N,), caption_ids int32 (N, K)): ``text_ids[n]`` is
        the id of ``normalize_caption(texts[n])`` (equal strings, equal id);
        ``caption_ids[n]`` lists the distinct ids of every caption of
        ``image_ids[n]``, padded with -1 to K = the most distinct captions
        any image has.
    """
    mapping = {}
    text_ids = np.array(
        [mapping.setdefault(normalize_caption(t), len(mapping)) for t in texts], dtype=np.int32
    )
    per_image = {}
    for image_id, text_id in zip(image_ids, text_ids.tolist()):
        ids = per_image.setdefault(image_id, [])
        if text_id not in ids:
            ids.append(text_id)
    width = max((len(v) for v in per_image.values()), default=1)
    caption_ids = np.full((len(text_ids), width), -1, dtype=np.int32)
    for n, image_id in enumerate(image_ids):
        ids = per_image[image_id]
        caption_ids[n, :len(ids)] = ids
    return text_ids, caption_ids


def make_dataset(records, *, tokenizer, image_config, text_length, batch_size, training=False,
                 seed=0, start_step=0, report=None, source=None, **unused):
    """Records (``image``, ``text``, ``image_id``) -> batches of x (no y).

    ``x`` holds ``token_ids``, ``padding_mask``, ``images``, ``image_ids``
    (int32 (B,), ids mapped densely), so captions of one image in a batch
    are all positives, and ``text_ids`` int32 (B,) / ``caption_ids`` int32
    (B, K) (:func:`text_ids_and_captions`), so a caption that is literally
    one of another image's captions is a positive of that image too
    (:meth:`VLBEiTRetrieval.positive_mask`). Training batches are full
    (hard negatives need B >= 2). Common arguments: see
    :mod:`vlbeit_keras.tasks.data`.
    """
    import tensorflow as tf

    records = task_data.require(records, source)
    task_data.check_text(records, source)
    raw_ids = [task_data.field(r, "image_id", i, source) for i, r in enumerate(records)]
    ids = dense_image_ids(raw_ids)
    text_ids, caption_ids = text_ids_and_captions([r["text"] for r in records], raw_ids)
    packed = np.concatenate([ids[:, None], text_ids[:, None], caption_ids], axis=1)
    ds = task_data.image_text_dataset(
        records, tokenizer=tokenizer, image_config=image_config, text_length=text_length,
        batch_size=batch_size, labels=packed, training=training, seed=seed,
        start_step=start_step, report=report, image_key="image",
    )

    def merge(x, packed):
        return {**x, "image_ids": packed[:, 0], "text_ids": packed[:, 1],
                "caption_ids": packed[:, 2:]}

    return ds.map(merge, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _predict_fixed(fn, arrays, batch_size):
    """Run ``fn`` over aligned arrays in batches padded to ``batch_size``
    (one compiled shape), concatenate the outputs."""
    n = len(arrays[0])
    outputs = []
    for start in range(0, n, batch_size):
        chunk = [a[start:start + batch_size] for a in arrays]
        size = len(chunk[0])
        if size < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - size, axis=0)]) for c in chunk]
        out = fn(chunk)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(out))[:size])
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def encoder_functions(model):
    """Compiled image / text / ITM functions of a retrieval model.

    Built as functional ``keras.Model``s sharing the model's layers and run
    with ``predict_on_batch`` (compiled on every backend).

    Returns:
        dict ``image`` (images -> (B, d)), ``text`` ((tokens, mask) ->
        (B, d)), and ``itm`` ((tokens, mask, images) -> (B, 2)) when the
        model has an ITM head.
    """
    backbone = model.backbone
    h, w = backbone.image_size
    t = backbone.max_text_length
    images = keras.Input((h, w, 3), dtype="float32")
    tokens = keras.Input((t,), dtype="int32")
    mask = keras.Input((t,), dtype="int32")
    image_model = keras.Model(images, model.image_embeddings(images))
    text_model = keras.Model([tokens, mask], model.text_embeddings(tokens, mask))
    fns = {
        "image": lambda c: image_model.predict_on_batch(c[0]),
        "text": lambda c: text_model.predict_on_batch([c[0], c[1]]),
    }
    if model.use_itm:
        itm_model = keras.Model([tokens, mask, images], model.itm_logits(tokens, mask, images))
        fns["itm"] = lambda c: itm_model.predict_on_batch([c[0], c[1], c[2]])
    return fns


def _top_k(scores, k):
    """Per-row indices of the k best scores (stable: lower index first on ties)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def rerank(similarity, itm_positive, pairs_rows, pairs_cols):
    """Re-ranked score matrix for one direction.

    Args:
        similarity: float64 (Q, G) dual-encoder scores (query rows).
        itm_positive: float (P,) ITM scores of the re-ranked pairs (the
            positive logit or the log-odds; :func:`evaluate`).
        pairs_rows, pairs_cols: int (P,) the (query, candidate) of each pair.

    Returns:
        float64 (Q, G): re-ranked pairs score ``itm + similarity``; every
        other candidate keeps its dual-encoder order, shifted below the
        lowest re-ranked score of its row.
    """
    scores = np.array(similarity, dtype=np.float64)
    reranked = np.zeros_like(scores, dtype=bool)
    reranked[pairs_rows, pairs_cols] = True
    fused = np.asarray(itm_positive, dtype=np.float64) + scores[pairs_rows, pairs_cols]
    out = scores.copy()
    out[pairs_rows, pairs_cols] = fused
    for q in range(scores.shape[0]):
        rest = ~reranked[q]
        if rest.any() and reranked[q].any():
            lowest = out[q, reranked[q]].min()
            out[q, rest] = scores[q, rest] - scores[q, rest].max() + lowest - 1.0
    return out


RERANK_SCORES = ("log_odds", "positive_logit")


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, rerank_k=32,
             rerank_score="log_odds", report=None, source=None, **config):
    """Retrieval recall with dual-encoder ranking and ITM re-ranking.

    Images are de-duplicated by ``image_id`` (first occurrence); every
    record contributes its caption to the gallery of texts.

    Args:
        rerank_k: candidates re-ranked by ITM per query (0 or a model
            without ITM: dual encoder only).
        rerank_score: score of a re-ranked pair. ``"log_odds"`` (default):
            the ITM log-odds (logit 1 - logit 0) plus the ITC logit
            (exp(``logit_scale``) x cosine), two log-likelihood ratios in
            nats; ``"positive_logit"``: the ITM positive logit plus the
            cosine (ALBEF / BLIP ``evaluation``). Measured in
            docs/training_health.md, E6.
        Other arguments: see :mod:`vlbeit_keras.tasks.data`.

    Returns:
        (metrics, predictions): ``metrics`` = ``tr_r1/5/10``, ``ir_r1/5/10``,
        their means and ``r_mean`` for the final ranking, the same prefixed
        ``itc_`` for the dual encoder alone, all of them again prefixed
        ``dedup_`` with duplicate captions merged (a text identical, after
        :func:`normalize_caption`, to one of an image's captions counts as
        that image's own: ``retrieval_recall(text_keys=...)``; equal to the
        standard numbers when no caption repeats), ``num_images``,
        ``num_texts``;
        ``predictions`` = ``{"image_ids": [...], "text_image_ids": [...],
        "i2t": top-10 text indices per image, "t2i": top-10 image ids per text}``.
    """
    from vlbeit_keras.data import pipeline

    records = task_data.require(records, source)
    task_data.check_text(records, source)
    task_data.check_image_config(model, image_config)
    ids = [task_data.field(r, "image_id", i, source) for i, r in enumerate(records)]
    unique_ids, first = unique_images(ids)
    gallery = [records[i] for i in first]
    for i, r in zip(first, gallery):
        task_data.field(r, "image", int(i), source)

    image_ds = pipeline.make_image_dataset(
        gallery, image_config=image_config, batch_size=batch_size,
        labels=np.arange(len(gallery)), training=False, image_key="image", report=report,
    )
    image_array = task_data.predict_in_record_order(
        lambda x: x["images"], image_ds, len(gallery), source)
    text_ds = pipeline.make_text_dataset(
        records, tokenizer, text_length=model.backbone.max_text_length,
        batch_size=batch_size, labels=np.arange(len(records)),
    )
    packed = task_data.predict_in_record_order(lambda x: x, text_ds, len(records), source)
    tokens, masks = packed["token_ids"], packed["padding_mask"]

    fns = encoder_functions(model)
    image_emb = _predict_fixed(fns["image"], [image_array], batch_size).astype(np.float64)
    text_emb = _predict_fixed(fns["text"], [tokens, masks], batch_size).astype(np.float64)
    similarity = image_emb @ text_emb.T  # (n_images, n_texts)

    keys = [normalize_caption(r["text"]) for r in records]
    metrics = {f"itc_{k}": v for k, v in retrieval_recall(similarity, unique_ids, ids).items()}
    metrics.update({f"dedup_itc_{k}": v for k, v in retrieval_recall(
        similarity, unique_ids, ids, text_keys=keys).items()})
    i2t_scores, t2i_scores = similarity, similarity.T
    k = int(rerank_k or 0)
    if rerank_score not in RERANK_SCORES:
        raise ValueError(f"`rerank_score` must be one of {RERANK_SCORES}; got {rerank_score!r}.")
    if k > 0 and model.use_itm:
        tr_top = _top_k(similarity, min(k, similarity.shape[1]))  # texts per image
        ir_top = _top_k(similarity.T, min(k, similarity.shape[0]))  # images per text
        tr_rows = np.repeat(np.arange(similarity.shape[0]), tr_top.shape[1])
        tr_cols = tr_top.reshape(-1)
        ir_rows = np.repeat(np.arange(similarity.shape[1]), ir_top.shape[1])
        ir_cols = ir_top.reshape(-1)
        # One ITM pass per distinct (image, text) pair of both directions.
        pair_image = np.concatenate([tr_rows, ir_cols])
        pair_text = np.concatenate([tr_cols, ir_rows])
        pairs, inverse = np.unique(np.stack([pair_image, pair_text], 1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        logits = _predict_fixed(
            fns["itm"], [tokens[pairs[:, 1]], masks[pairs[:, 1]], image_array[pairs[:, 0]]],
            batch_size,
        ).astype(np.float64)
        if rerank_score == "log_odds":
            itm = logits[:, 1] - logits[:, 0]
            base = similarity * float(np.exp(ops.convert_to_numpy(model.logit_scale)))
        else:
            itm, base = logits[:, 1], similarity
        n_tr = len(tr_rows)
        i2t_scores = rerank(base, itm[inverse[:n_tr]], tr_rows, tr_cols)
        t2i_scores = rerank(base.T, itm[inverse[n_tr:]], ir_rows, ir_cols)
    metrics.update(retrieval_recall(i2t_scores, unique_ids, ids, t2i_scores=t2i_scores))
    metrics.update({f"dedup_{k}": v for k, v in retrieval_recall(
        i2t_scores, unique_ids, ids, t2i_scores=t2i_scores, text_keys=keys).items()})
    metrics["num_images"] = len(unique_ids)
    metrics["num_texts"] = len(records)
    predictions = {
        "image_ids": [_plain(i) for i in unique_ids],
        "text_image_ids": [_plain(i) for i in ids],
        "i2t": _top_k(i2t_scores, min(10, i2t_scores.shape[1])).tolist(),
        "t2i": [[_plain(unique_ids[j]) for j in row]
                for row in _top_k(t2i_scores, min(10, t2i_scores.shape[1]))],
    }
    return metrics, predictions


def chance_recall(image_ids, text_image_ids, ks=(1, 5, 10), text_keys=None):
    """Expected recall of a random ranking (the retrieval "chance" baseline).

    Exact expectations, not a simulation: text retrieval for an image with
    c correct texts among T is a hit at K with probability
    ``1 - C(T - c, K) / C(T, K)``; image retrieval for a caption with m
    correct images among N with probability ``1 - C(N - m, K) / C(N, K)``
    (c = the image's captions and m = 1, or with ``text_keys`` the counts
    after merging duplicate captions as ``retrieval_recall`` does).

    Args:
        image_ids: gallery image ids (distinct).
        text_image_ids: the image id of every caption.
        ks: recall cut-offs.
        text_keys: optional key of every caption (duplicates merged).

    Returns:
        dict with the keys of :func:`vlbeit_keras.metrics.retrieval.retrieval_recall`
        (``tr_r1`` ... ``ir_r10``, ``tr_mean``, ``ir_mean``, ``r_mean``).
    """
    image_ids, text_image_ids = list(image_ids), list(text_image_ids)
    keys = list(text_keys) if text_keys is not None else list(range(len(text_image_ids)))
    images_of_key, keys_of_image = {}, {}
    for image, key in zip(text_image_ids, keys):
        images_of_key.setdefault(key, set()).add(image)
        keys_of_image.setdefault(image, set()).add(key)
    texts_of_key = collections.Counter(keys)
    n_images, n_texts = len(image_ids), len(text_image_ids)

    def hit(total, correct, k):
        miss = 1.0
        for j in range(min(k, total)):
            miss *= max(total - correct - j, 0) / (total - j)
        return 1.0 - miss

    out = {}
    for k in ks:
        out[f"tr_r{k}"] = float(np.mean([
            hit(n_texts, sum(texts_of_key[q] for q in keys_of_image.get(image, ())), k)
            for image in image_ids]))
    for k in ks:
        out[f"ir_r{k}"] = float(np.mean([hit(n_images, len(images_of_key[q]), k) for q in keys]))
    out["tr_mean"] = float(np.mean([out[f"tr_r{k}"] for k in ks]))
    out["ir_mean"] = float(np.mean([out[f"ir_r{k}"] for k in ks]))
    out["r_mean"] = (out["tr_mean"] + out["ir_mean"]) / 2
    return out


def baseline(train_records, eval_records, **config):
    """Chance: the expected recall of a random ranking of the evaluation
    gallery (:func:`chance_recall`), under the keys of :func:`evaluate`
    (also ``itc_``-, ``dedup_``- and ``dedup_itc_``-prefixed);
    ``train_records`` are not used."""
    eval_records = task_data.require(eval_records, "evaluation records")
    ids = [task_data.field(r, "image_id", i) for i, r in enumerate(eval_records)]
    unique_ids, _ = unique_images(ids)
    chance = chance_recall(list(unique_ids), ids)
    dedup = chance_recall(list(unique_ids), ids,
                          text_keys=[normalize_caption(r["text"]) for r in eval_records])
    return {**{f"itc_{k}": v for k, v in chance.items()}, **chance,
            **{f"dedup_itc_{k}": v for k, v in dedup.items()},
            **{f"dedup_{k}": v for k, v in dedup.items()},
            "num_images": len(unique_ids), "num_texts": len(ids)}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def export_predictions(predictions, path):
    """JSON with the gallery ids and the top-10 rankings of both directions."""
    return task_data.write_json(predictions, path)


def example(num_records, image_size, seed=0):
    """Synthetic captions, 1-3 per image, image ids as strings, unordered."""
    rng = np.random.default_rng(seed)
    records, image = [], 0
    while len(records) < num_records:
        pixels = random_image(rng, image_size)
        for _ in range(int(rng.integers(1, 4))):
            records.append({"image": pixels, "text": random_sentence(rng),
                            "image_id": f"img{image:03d}"})
        image += 1
    records = records[:num_records]
    order = rng.permutation(len(records))
    return [records[i] for i in order], {"image_size": tuple(image_size),
                                         "negative_sampling_seed": seed, "rerank_k": 3}


TASK = TaskSpec(
    name="retrieval",
    description="Image-text retrieval: ITC dual encoder + hard-negative ITM; top-k ITM re-ranking; TR/IR R@1/5/10.",
    model_cls=VLBEiTRetrieval,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "text", "image_id"),
    metric_names=tuple(
        f"{prefix}{key}"
        for prefix in ("", "itc_", "dedup_", "dedup_itc_")
        for key in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10",
                    "tr_mean", "ir_mean", "r_mean")
    ) + ("num_images", "num_texts"),
    default_config={"image_size": None, "use_itm": True, "negative_sampling_seed": None,
                    "rerank_k": 32, "rerank_score": "log_odds",
                    "resize_method": DEFAULT_RESIZE_METHOD},
    example=example,
    baseline=baseline,
)
