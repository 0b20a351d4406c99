"""VL-BEiT's three masked-prediction objectives: MLM, MIM and MVLM.

VL-BEiT (Bao et al. 2022, Sec. 2.2): one bidirectional Transformer trained
with masked prediction only. MLM on text-only input (L-FFN path), MIM on
image-only input (V-FFN path), MVLM on image-text pairs (fused path: split
experts below, VL-FFN in the top layers). Losses are computed at masked
positions only: states are gathered at the fixed-size ``*_mask_positions``
before the vocabulary / codebook projection; padding entries of those lists
carry weight 0. Softmax and losses are float32.
"""

import math

import keras
from keras import ops
from keras_hub.layers import MaskedLMHead

from vlbeit_keras.layers.pretraining_heads import MaskTokenEmbedding
from vlbeit_keras.layers.pretraining_heads import MaskedImageModelingHead
from vlbeit_keras.objectives.base import PretrainingObjective
from vlbeit_keras.objectives.losses import masked_cross_entropy

MLM_HEAD = "mlm_head"
MIM_HEAD = "mim_head"
IMAGE_MASK_TOKEN = "image_mask_token"


def head_dtype_policy(backbone):
    """The MLM head's dtype policy: float32 under mixed precision.

    keras-hub's ``MaskedLMHead`` (untied decoder) adds its float32
    ``output_bias`` to half-precision logits without a cast, which
    TensorFlow rejects (``AddV2`` bfloat16 + float); the head runs on the
    gathered masked positions only and its logits feed a float32 softmax, so
    float32 costs little. Non-mixed policies are used as they are.
    """
    policy = backbone.dtype_policy
    return "float32" if policy.name.startswith("mixed_") else policy


def mlm_head(pretrainer):
    """The shared MLM head (VLMo ``MLMHead``; LayerNorm eps 1e-12)."""
    backbone = pretrainer.backbone

    def factory():
        head = MaskedLMHead(
            vocabulary_size=backbone.vocabulary_size,
            intermediate_activation="gelu",  # keras.activations.gelu: exact erf form
            layer_norm_epsilon=1e-12,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=backbone.initializer_range),
            dtype=head_dtype_policy(backbone),
            name=MLM_HEAD,
        )
        head.build((None, None, backbone.hidden_dim))
        return head

    return pretrainer.shared_layer(MLM_HEAD, factory)


def mim_head(pretrainer):
    """The shared MIM head: Dense(d -> visual codebook size)."""
    backbone = pretrainer.backbone
    tokenizer = pretrainer.visual_tokenizer
    if tokenizer is None:
        raise ValueError(
            "Masked image modeling needs a visual tokenizer for its targets: "
            "pass `visual_tokenizer=` to VLBEiTPretrainer (see docs/data.md)."
        )

    def factory():
        head = MaskedImageModelingHead(
            tokenizer.codebook_size, initializer_range=backbone.initializer_range,
            dtype=backbone.dtype_policy, name=MIM_HEAD
        )
        head.build((None, None, backbone.hidden_dim))
        return head

    return pretrainer.shared_layer(MIM_HEAD, factory)


def image_mask_token(pretrainer):
    """The shared learnable [MASK] patch embedding."""
    backbone = pretrainer.backbone

    def factory():
        layer = MaskTokenEmbedding(
            backbone.hidden_dim, initializer_range=backbone.initializer_range,
            dtype=backbone.dtype_policy, name=IMAGE_MASK_TOKEN
        )
        layer.build()
        return layer

    return pretrainer.shared_layer(IMAGE_MASK_TOKEN, factory)


def visual_token_chance(pretrainer):
    """Chance value (nats) of a loss on visual-token targets.

    The entropy of the targets' marginal, ln(perplexity), when the visual
    tokenizer carries its measured codebook usage (``usage_stats``, set by
    the pretraining recipe from ``fit_codebook``); otherwise ln K (uniform
    over the K codes), an upper bound.
    """
    tokenizer = pretrainer.visual_tokenizer
    perplexity = (getattr(tokenizer, "usage_stats", None) or {}).get("perplexity")
    return math.log(float(perplexity)) if perplexity else math.log(tokenizer.codebook_size)


def visual_token_targets(pretrainer, images, positions):
    """Visual-token ids of the *unmasked* images at masked positions.

    float32, no gradient (MODEL_SPEC §7). Returns int32 (batch, P).
    """
    ids = pretrainer.visual_tokenizer(ops.cast(images, "float32"))
    ids = ops.stop_gradient(ops.cast(ids, "int32"))
    return ops.take_along_axis(ids, ops.cast(positions, "int32"), axis=1)


def _text_logits(pretrainer, sequence, positions):
    return ops.cast(mlm_head(pretrainer)(sequence, mask_positions=ops.cast(positions, "int32")), "float32")


def _image_logits(pretrainer, image_sequence, positions):
    return mim_head(pretrainer)(image_sequence[:, 1:], positions)  # drop [I_CLS]


class MaskedLanguageModeling(PretrainingObjective):
    """MLM on text-only input (L-FFN path).

    Stream ``"text"``: ``token_ids`` (B, T) already corrupted (15% of real
    tokens selected; 80% [MASK], 10% random, 10% kept), ``padding_mask``
    (B, T), ``text_mask_positions`` (B, P), ``text_mask_ids`` (B, P) original
    ids, ``text_mask_weights`` (B, P). Metrics: ``mlm_loss``, ``mlm_accuracy``.
    """

    stream = "text"

    def build(self, pretrainer):
        mlm_head(pretrainer)

    def call(self, pretrainer, inputs, training=False):
        out = pretrainer.backbone.encode_text(
            inputs["token_ids"], inputs["padding_mask"], training=training
        )
        return {"logits": _text_logits(pretrainer, out["text_sequence_output"], inputs["text_mask_positions"])}

    def chance_losses(self, pretrainer):
        """ln V: uniform over the text vocabulary."""
        return {"loss": math.log(pretrainer.backbone.vocabulary_size)}

    def compute_loss(self, pretrainer, inputs, predictions):
        loss, acc, n = masked_cross_entropy(
            predictions["logits"], inputs["text_mask_ids"], inputs["text_mask_weights"]
        )
        return {"loss": loss, "accuracy": acc, "accuracy_count": n}


class MaskedImageModeling(PretrainingObjective):
    """MIM on image-only input (V-FFN path), BEiT-style.

    Stream ``"image"``: ``images`` (B, H, W, 3) unmasked, normalised;
    ``patch_mask`` (B, N) bool, True = replaced by the [MASK] embedding;
    ``image_mask_positions`` (B, P) patch indices; ``image_mask_weights``
    (B, P). Targets are the visual tokenizer's ids of the unmasked image.
    Metrics: ``mim_loss``, ``mim_accuracy``.
    """

    stream = "image"

    def build(self, pretrainer):
        mim_head(pretrainer)
        image_mask_token(pretrainer)

    def call(self, pretrainer, inputs, training=False):
        out = pretrainer.backbone.encode_image(
            inputs["images"],
            patch_mask=inputs["patch_mask"],
            mask_token=image_mask_token(pretrainer)(),
            training=training,
        )
        positions = inputs["image_mask_positions"]
        return {
            "logits": _image_logits(pretrainer, out["image_sequence_output"], positions),
            "targets": visual_token_targets(pretrainer, inputs["images"], positions),
        }

    def chance_losses(self, pretrainer):
        """The visual-token chance value (:func:`visual_token_chance`)."""
        return {"loss": visual_token_chance(pretrainer)}

    def compute_loss(self, pretrainer, inputs, predictions):
        loss, acc, n = masked_cross_entropy(
            predictions["logits"], predictions["targets"], inputs["image_mask_weights"]
        )
        return {"loss": loss, "accuracy": acc, "accuracy_count": n}


class MaskedVisionLanguageModeling(PretrainingObjective):
    """MVLM on image-text pairs: masked text and masked image in one fused pass.

    Stream ``"image_text"``: the text fields of MLM (50% of text tokens
    masked) and the image fields of MIM (~40% of patches, block-wise), text
    padded to the backbone's ``max_text_length``. Text targets go through the
    shared MLM head, image targets through the shared MIM head (MODEL_SPEC
    §6.1, §6.3: one pass with both masks, as BEiT-3's masked data modeling).

    Args:
        text_weight, image_weight: weights of the two parts inside this
            objective's loss (1.0 each: total = MLM + MIM + MVLM_text + MVLM_image).
        weight: overall multiplier.

    Metrics: ``mvlm_loss``, ``mvlm_text_loss``, ``mvlm_text_accuracy``,
    ``mvlm_image_loss``, ``mvlm_image_accuracy``.
    """

    stream = "image_text"
    metric_names = ("loss", "text_loss", "text_accuracy", "image_loss", "image_accuracy")

    def __init__(self, weight=1.0, text_weight=1.0, image_weight=1.0):
        super().__init__(weight)
        self.text_weight = float(text_weight)
        self.image_weight = float(image_weight)

    def build(self, pretrainer):
        mlm_head(pretrainer)
        mim_head(pretrainer)
        image_mask_token(pretrainer)

    def call(self, pretrainer, inputs, training=False):
        out = pretrainer.backbone.encode_image_text(
            inputs["token_ids"],
            inputs["padding_mask"],
            inputs["images"],
            patch_mask=inputs["patch_mask"],
            mask_token=image_mask_token(pretrainer)(),
            training=training,
        )
        positions = inputs["image_mask_positions"]
        return {
            "text_logits": _text_logits(pretrainer, out["text_sequence_output"], inputs["text_mask_positions"]),
            "image_logits": _image_logits(pretrainer, out["image_sequence_output"], positions),
            "image_targets": visual_token_targets(pretrainer, inputs["images"], positions),
        }

    def compute_loss(self, pretrainer, inputs, predictions):
        text_loss, text_acc, text_n = masked_cross_entropy(
            predictions["text_logits"], inputs["text_mask_ids"], inputs["text_mask_weights"]
        )
        image_loss, image_acc, image_n = masked_cross_entropy(
            predictions["image_logits"], predictions["image_targets"], inputs["image_mask_weights"]
        )
        return {
            "loss": self.text_weight * text_loss + self.image_weight * image_loss,
            "text_loss": text_loss,
            "text_accuracy": text_acc,
            "text_accuracy_count": text_n,
            "image_loss": image_loss,
            "image_accuracy": image_acc,
            "image_accuracy_count": image_n,
        }

    def chance_losses(self, pretrainer):
        """ln V for the text part, :func:`visual_token_chance` for the image part."""
        return {"text_loss": math.log(pretrainer.backbone.vocabulary_size),
                "image_loss": visual_token_chance(pretrainer)}

    def get_config(self):
        return {**super().get_config(), "text_weight": self.text_weight, "image_weight": self.image_weight}
