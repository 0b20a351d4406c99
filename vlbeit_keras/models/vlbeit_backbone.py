"""VLBEiTBackbone: the MoME Transformer with its three encodings."""

import os

import keras
from keras import ops
from keras_hub.models import Backbone

from vlbeit_keras.layers.embeddings import PatchEmbedding
from vlbeit_keras.layers.embeddings import TextEmbedding
from vlbeit_keras.layers.mome_encoder import MoMEEncoder
from vlbeit_keras.layers.mome_encoder import static_length

POSITION_MODES = ("relative", "absolute")
POOLING_MODES = ("cls", "mean", "text_mean")
TEXT_MODALITY, IMAGE_MODALITY = 0, 1


def _pair(value, field):
    if isinstance(value, int):
        return (value, value)
    try:
        h, w = value
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ValueError(
            f"`{field}` must be an int or a (height, width) pair; received {field}={value!r}."
        ) from None


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTBackbone(Backbone):
    """VL-BEiT backbone: a Mixture-of-Modality-Experts (MoME) Transformer.

    One set of weights, three encodings (VL-BEiT, Bao et al. 2022, Sec. 2;
    layout of the official VLMo code, ``vlmo/vlmo/modules``):

    - image-only (:meth:`encode_image`): [I_CLS] + patches, V-FFN in every block;
    - text-only (:meth:`encode_text`): [T_CLS] ... [T_SEP] [PAD]..., L-FFN;
    - image-text (:meth:`encode_image_text`, also the functional graph used by
      ``backbone(inputs)``): text first, then image; below the top
      ``num_vl_layers`` blocks the text tokens use the L-FFN and the image
      tokens the V-FFN, the top blocks use the VL-FFN on all tokens.

    Self-attention (fused qkv + q/v biases, float32 softmax) and the relative
    position table are shared by all modalities; each expert has its own
    pre-FFN LayerNorm. Text embeddings are BERT's (word + token-type row 0,
    LayerNorm eps 1e-12); the model adds a modality-type row (0 text, 1 image).
    See ``docs/architecture.md``.

    Args:
        vocabulary_size: int, WordPiece vocabulary (30522 for bert-base-uncased).
        num_layers: int, number of MoME blocks.
        num_heads: int, attention heads (must divide ``hidden_dim``).
        hidden_dim: int, width d.
        intermediate_dim: int, FFN hidden width (4d).
        num_vl_layers: int, top blocks holding a VL-FFN (0..num_layers).
        image_size: int or (height, width) in pixels, multiples of ``patch_size``.
        patch_size: int, square patch side in pixels.
        max_text_length: int T, text length of image-text inputs (the
            functional graph's ``token_ids`` length) and rows of the absolute
            text table. Text must be padded to exactly T for image-text inputs.
        relative_text_length: int L0, text span of the relative table (VLMo
            ``max_text_len_of_initckpt``, 196); text inputs may be up to L0
            long. Ignored with ``position_mode="absolute"``.
        position_mode: ``"relative"`` (one shared relative-bias table, VLMo
            Base/Large) or ``"absolute"`` (learned image and text position
            tables, VLMo Base+).
        layerscale_init: float or None, initial layerscale (0.1; None = off).
        drop_path_rate: float, stochastic depth of the last block.
        expert_type: str, a registered expert kind (``"ffn"`` built in).
        num_modality_types: int, rows of the modality-type table (2; NLVR2
            uses 3, the third for the second image).
        layer_norm_epsilon: float, 1e-6 in every block and the final norm.
        pooling: the vector behind ``pooled_output`` and the
            ``*_pooled_output`` of the single-modality encodings:
            ``"cls"`` (VLMo: the [T_CLS] / [I_CLS] row, default),
            ``"mean"`` (the mean of the real tokens; for image-text input,
            of the joint sequence) or ``"text_mean"`` (as ``"mean"``, but
            for image-text input the mean of the real *text* rows only: the
            mean-pooling analogue of VLMo's fused [T_CLS], itself a text
            row). Masked-prediction pretraining never trains [CLS], and at
            small scale its output barely depends on the input, so the small
            presets use ``"text_mean"`` (docs/training_health.md, E2, E9).
        initializer_range: float, std of the (truncated-)normal initialisation
            of every kernel, embedding and token (0.02 in BEiT / VLMo, tuned
            for d = 768; the small presets use fan-in scaling, d ** -0.5,
            docs/training_health.md). Task and pretraining heads built on
            the backbone use it too.
        remat: bool, gradient checkpointing of every MoME block (attention
            and expert branches recomputed in the backward pass; outputs and
            gradients unchanged; see ``docs/scaling.md`` for the memory saved).
        dtype: dtype policy for all sublayers (e.g. ``"mixed_bfloat16"``).

    Inputs of the functional graph (image-text encoding):
        token_ids: int32 (batch, T); padding_mask: int/bool (batch, T),
        1 = real token; images: float32 (batch, H, W, 3) normalised to [-1, 1].

    Outputs (a dict):
        ``text_sequence_output`` (batch, T, d), ``image_sequence_output``
        (batch, N + 1, d) (both after the final LayerNorm) and
        ``pooled_output`` (batch, d) = tanh(Dense(pooled)), pooled = the
        [T_CLS] row (``pooling="cls"``), the mean of the real tokens of the
        joint sequence (``"mean"``) or of the real text rows (``"text_mean"``).

    Raises:
        ValueError: a configuration field is invalid; the message names the
            field and the value.

    Example:
    ```python
    import numpy as np
    import vlbeit_keras

    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    out = backbone({
        "token_ids": np.array([[1, 5, 6, 2, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0, 0, 0, 0]], "int32"),
        "images": np.zeros((1, 32, 32, 3), "float32"),
    })
    out["pooled_output"].shape  # (1, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        num_vl_layers,
        image_size=224,
        patch_size=16,
        max_text_length=40,
        relative_text_length=196,
        position_mode="relative",
        layerscale_init=0.1,
        drop_path_rate=0.0,
        expert_type="ffn",
        num_modality_types=2,
        layer_norm_epsilon=1e-6,
        remat=False,
        pooling="cls",
        initializer_range=0.02,
        dtype=None,
        **kwargs,
    ):
        image_size = _pair(image_size, "image_size")
        _validate(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_vl_layers=num_vl_layers,
            image_size=image_size,
            patch_size=patch_size,
            max_text_length=max_text_length,
            relative_text_length=relative_text_length,
            position_mode=position_mode,
            drop_path_rate=drop_path_rate,
            num_modality_types=num_modality_types,
            pooling=pooling,
            initializer_range=initializer_range,
        )
        relative = position_mode == "relative"
        # Set before the functional graph is traced (encode_image_text pools).
        self.pooling = pooling

        # === Layers ===
        self.patch_embed = PatchEmbedding(
            hidden_dim,
            patch_size,
            image_size,
            use_absolute_positions=not relative,
            initializer_range=initializer_range,
            dtype=dtype,
            name="patch_embed",
        )
        self.text_embeddings = TextEmbedding(
            vocabulary_size,
            hidden_dim,
            max_text_length,
            use_absolute_positions=not relative,
            initializer_range=initializer_range,
            dtype=dtype,
            name="text_embeddings",
        )
        self.modality_type_embeddings = keras.layers.Embedding(
            num_modality_types,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=dtype,
            name="modality_type_embeddings",
        )
        self.transformer = MoMEEncoder(
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_vl_layers=num_vl_layers,
            grid_size=self.patch_embed.grid_size,
            relative_text_length=relative_text_length if relative else None,
            expert_type=expert_type,
            layerscale_init=layerscale_init,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            remat=remat,
            initializer_range=initializer_range,
            dtype=dtype,
            name="transformer",
        )
        self.pooler = keras.layers.Dense(
            hidden_dim,
            activation="tanh",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
            dtype=dtype,
            name="pooler",
        )
        self.num_image_tokens = self.patch_embed.num_patches + 1

        # === Functional model (image-text encoding) ===
        token_ids = keras.Input(shape=(max_text_length,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(
            shape=(max_text_length,), dtype="int32", name="padding_mask"
        )
        images = keras.Input(shape=(*image_size, 3), dtype="float32", name="images")
        outputs = self.encode_image_text(token_ids, padding_mask, images)
        kwargs.setdefault("name", "vlbeit_backbone")
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask, "images": images},
            outputs=outputs,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.num_vl_layers = int(num_vl_layers)
        self.image_size = image_size
        self.patch_size = int(patch_size)
        self.max_text_length = int(max_text_length)
        self.relative_text_length = int(relative_text_length)
        self.position_mode = position_mode
        self.layerscale_init = layerscale_init
        self.drop_path_rate = float(drop_path_rate)
        self.expert_type = expert_type
        self.num_modality_types = int(num_modality_types)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.remat = bool(remat)
        self.initializer_range = float(initializer_range)
        self.grid_size = self.patch_embed.grid_size

    # ------------------------------------------------------------------
    # Embeddings
    def _add_modality_type(self, x, index):
        """x (batch, S, d) + modality-type row ``index`` (broadcast over S)."""
        ids = ops.full_like(ops.cast(x[:, :1, 0], "int32"), index)
        return x + ops.cast(self.modality_type_embeddings(ids), x.dtype)

    def embed_text(self, token_ids):
        """int (batch, T) -> float (batch, T, d): BERT embedding + modality row 0."""
        return self._add_modality_type(self.text_embeddings(token_ids), TEXT_MODALITY)

    def embed_image(self, images, patch_mask=None, mask_token=None, modality_type=IMAGE_MODALITY):
        """float (batch, H, W, 3) -> float (batch, N + 1, d).

        ``patch_mask`` (bool (batch, N), True = masked) replaces masked patch
        embeddings with ``mask_token`` (d,) before [I_CLS] and the modality
        row (``modality_type``: 1, or 2 for NLVR2's second image) are added.
        """
        x = self.patch_embed(images, patch_mask=patch_mask, mask_token=mask_token)
        return self._add_modality_type(x, modality_type)

    # ------------------------------------------------------------------
    # Pooling
    def pool_sequence(self, sequence, padding_mask=None):
        """One vector per input from a final-norm sequence, by ``pooling``.

        ``"cls"``: the first row ([T_CLS] for text and image-text inputs,
        [I_CLS] for images; VLMo ``heads.py``). ``"mean"`` and
        ``"text_mean"``: the mean of the rows ``padding_mask`` keeps (every
        row when it is None), computed in float32 (BEiT
        ``use_mean_pooling``; docs/training_health.md says why the small
        presets pool by the mean). The two differ only in which rows
        :meth:`encode_image_text` passes (:meth:`fused_pooling_rows`).

        Args:
            sequence: float (batch, S, d).
            padding_mask: optional bool/int (batch, S), True/1 = real token.

        Returns:
            float (batch, d) in the sequence's dtype.
        """
        if self.pooling == "cls":
            return sequence[:, 0]
        x = ops.cast(sequence, "float32")
        if padding_mask is None:
            pooled = ops.mean(x, axis=1)
        else:
            m = ops.cast(padding_mask, "float32")[:, :, None]
            pooled = ops.sum(x * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)
        return ops.cast(pooled, sequence.dtype)

    # ------------------------------------------------------------------
    # Encodings
    def encode_text(self, token_ids, padding_mask=None, use_vl_expert=False, training=None):
        """Text-only encoding (L-FFN in every block).

        Args:
            token_ids: int (batch, T), T static and <= ``relative_text_length``.
            padding_mask: int/bool (batch, T), 1 = real token; None = all real.
            use_vl_expert: use the VL-FFN in the top blocks (VLMo
                ``cls_vlffn_feats`` path) instead of the L-FFN.
            training: bool, enables drop path.

        Returns:
            dict: ``text_sequence_output`` (batch, T, d) after the final norm,
            ``text_cls_output`` (batch, d) = its [T_CLS] row,
            ``text_pooled_output`` (batch, d) by ``pooling``.
        """
        static_length(token_ids, 1, "text")
        x = self.embed_text(token_ids)
        if padding_mask is None:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        x = self.transformer(
            x,
            padding_mask=ops.cast(padding_mask, "bool"),
            modality="text",
            use_vl_expert=use_vl_expert,
            training=training,
        )
        return {
            "text_sequence_output": x,
            "text_cls_output": x[:, 0],
            "text_pooled_output": self.pool_sequence(x, padding_mask),
        }

    def encode_image(
        self, images, patch_mask=None, mask_token=None, use_vl_expert=False, training=None
    ):
        """Image-only encoding (V-FFN in every block).

        Args:
            images: float (batch, H, W, 3), normalised to [-1, 1].
            patch_mask: optional bool (batch, N), True = replace by ``mask_token``.
            mask_token: float (d,) [MASK] embedding (owned by the pretrainer).
            use_vl_expert: use the VL-FFN in the top blocks.
            training: bool.

        Returns:
            dict: ``image_sequence_output`` (batch, N + 1, d) after the final
            norm, ``image_cls_output`` (batch, d) = its [I_CLS] row,
            ``image_pooled_output`` (batch, d) by ``pooling``.
        """
        x = self.embed_image(images, patch_mask, mask_token)
        x = self.transformer(
            x, padding_mask=None, modality="image", use_vl_expert=use_vl_expert,
            training=training,
        )
        return {
            "image_sequence_output": x,
            "image_cls_output": x[:, 0],
            "image_pooled_output": self.pool_sequence(x),
        }

    def encode_image_text(
        self,
        token_ids,
        padding_mask,
        images,
        patch_mask=None,
        mask_token=None,
        image_modality_type=IMAGE_MODALITY,
        training=None,
    ):
        """Fused image-text encoding: text first, then image.

        Args:
            token_ids: int (batch, T); padding_mask: (batch, T), 1 = real.
            images: float (batch, H, W, 3).
            patch_mask, mask_token: optional image masking (MVLM).
            image_modality_type: modality row of the image (1; 2 for NLVR2's
                second image).
            training: bool.

        Returns:
            dict: ``text_sequence_output`` (batch, T, d),
            ``image_sequence_output`` (batch, N + 1, d), ``pooled_output``
            (batch, d) = tanh(Dense(pooled)), pooled by ``pooling`` over
            the joint sequence, or its text rows for ``"text_mean"``
            (padding excluded).
        """
        text_length = static_length(token_ids, 1, "text")
        text = self.embed_text(token_ids)
        image = self.embed_image(images, patch_mask, mask_token, image_modality_type)
        x = ops.concatenate([text, image], axis=1)
        mask = ops.concatenate(
            [
                ops.cast(padding_mask, "bool"),
                ops.ones_like(image[:, :, 0], dtype="bool"),
            ],
            axis=1,
        )
        x = self.transformer(x, padding_mask=mask, modality="image_text", training=training)
        return {
            "text_sequence_output": x[:, :text_length],
            "image_sequence_output": x[:, text_length:],
            "pooled_output": self.pooler(
                self.pool_sequence(*self.fused_pooling_rows(x, mask, text_length))
            ),
        }

    def fused_pooling_rows(self, sequence, mask, text_length):
        """The rows of a joint (text, image) sequence that ``pooled_output``
        pools: all of them, or with ``pooling="text_mean"`` the first
        ``text_length`` (text) rows.

        Args:
            sequence: float (batch, T + N + 1, d); mask: bool (batch, T + N + 1);
            text_length: int T.

        Returns:
            (sequence, mask) to pass to :meth:`pool_sequence`.
        """
        if self.pooling == "text_mean":
            return sequence[:, :text_length], mask[:, :text_length]
        return sequence, mask

    # ------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_vl_layers": self.num_vl_layers,
                "image_size": list(self.image_size),
                "patch_size": self.patch_size,
                "max_text_length": self.max_text_length,
                "relative_text_length": self.relative_text_length,
                "position_mode": self.position_mode,
                "layerscale_init": self.layerscale_init,
                "drop_path_rate": self.drop_path_rate,
                "expert_type": self.expert_type,
                "num_modality_types": self.num_modality_types,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
                "pooling": self.pooling,
                "initializer_range": self.initializer_range,
            }
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a built-in preset name or load a preset directory.

        Built-in presets (``vlbeit_tiny``, ``vlbeit_small``, ``vlbeit_base``,
        ``vlbeit_large``, ``vlbeit_base_plus``) are configurations only: no
        VL-BEiT weights were ever published, so they need
        ``load_weights=False`` (or convert VLMo weights, see
        ``docs/checkpoints.md``). Any other value is treated as a keras-hub
        preset directory (``config.json`` + ``model.weights.h5``).
        ``kwargs`` override config fields.

        Raises:
            ValueError: unknown preset name (lists the known ones), or a
                built-in preset with ``load_weights=True``.
        """
        from vlbeit_keras.models.presets import BACKBONE_PRESETS

        if preset in BACKBONE_PRESETS:
            if load_weights:
                raise ValueError(
                    f"Preset '{preset}' is a configuration without weights (no "
                    "VL-BEiT weights were ever published). Pass "
                    "load_weights=False, or convert a VLMo checkpoint with "
                    "`python -m vlbeit_keras convert`."
                )
            config = {**BACKBONE_PRESETS[preset]["config"], **kwargs}
            return cls(**config)
        if isinstance(preset, str) and os.path.isdir(preset):
            from vlbeit_keras.plugins import load_plugins

            load_plugins()
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        raise ValueError(
            f"Unknown preset {preset!r}: not a built-in preset and not a "
            f"directory. Built-in presets: {', '.join(BACKBONE_PRESETS)}."
        )


def _validate(**cfg):
    def fail(field, why):
        raise ValueError(f"Invalid `{field}`={cfg[field]!r}: {why}.")

    for field in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                  "intermediate_dim", "patch_size", "max_text_length",
                  "num_modality_types"):
        if not isinstance(cfg[field], int) or cfg[field] < 1:
            fail(field, "must be a positive integer")
    if cfg["hidden_dim"] % cfg["num_heads"]:
        fail("num_heads", f"must divide hidden_dim={cfg['hidden_dim']}")
    if not isinstance(cfg["num_vl_layers"], int) or not 0 <= cfg["num_vl_layers"] <= cfg["num_layers"]:
        fail("num_vl_layers", f"must be an integer in [0, num_layers={cfg['num_layers']}]")
    for side in cfg["image_size"]:
        if side < 1 or side % cfg["patch_size"]:
            fail("image_size", f"each side must be a positive multiple of patch_size={cfg['patch_size']}")
    if cfg["position_mode"] not in POSITION_MODES:
        fail("position_mode", f"must be one of {POSITION_MODES}")
    if cfg["position_mode"] == "relative":
        if not isinstance(cfg["relative_text_length"], int) or cfg["relative_text_length"] < 2:
            fail("relative_text_length", "must be an integer >= 2")
        if cfg["max_text_length"] > cfg["relative_text_length"]:
            fail(
                "max_text_length",
                f"must not exceed relative_text_length={cfg['relative_text_length']} "
                "(the relative table covers that many text tokens)",
            )
    if not float(cfg["initializer_range"]) > 0.0:
        fail("initializer_range", "must be > 0")
    if cfg["pooling"] not in POOLING_MODES:
        fail("pooling", f"must be one of {POOLING_MODES}")
    if cfg["num_modality_types"] < 2:
        fail("num_modality_types", "must be >= 2 (text and image rows)")
    if not 0.0 <= float(cfg["drop_path_rate"]) < 1.0:
        fail("drop_path_rate", "must be in [0, 1)")
