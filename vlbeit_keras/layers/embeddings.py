"""Image (patch) and text (BERT-style) embeddings of VL-BEiT."""

import keras
from keras import ops
from keras_hub.layers import PositionEmbedding


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class PatchEmbedding(keras.layers.Layer):
    """Image -> [I_CLS] + patch embeddings (VLMo ``visual_embed``).

    Conv2D(3 -> d, kernel = stride = patch, with bias) over channels-last
    images, flattened row-major over the (Hp, Wp) grid; masked patches
    (MIM/MVLM) replaced by a [MASK] vector; a learnable [I_CLS] vector
    prepended; optionally a learned absolute position table of N + 1 rows
    (VLMo Base+; Base/Large use only the relative bias). No LayerNorm.

    Args:
        hidden_dim: int, d.
        patch_size: int, patch side in pixels (16 in all presets but tiny).
        image_size: (H, W) in pixels, multiples of ``patch_size``.
        use_absolute_positions: bool, add a learned (N + 1, d) position table.
        dtype: dtype policy.

    Call arguments:
        images: float (batch, H, W, 3), already normalised (mean 0.5, std 0.5).
        patch_mask: optional bool (batch, N), True = replace this patch's
            embedding with ``mask_token``.
        mask_token: float (d,) [MASK] embedding, required with ``patch_mask``.

    Returns:
        float (batch, N + 1, d), [I_CLS] first.
    """

    def __init__(self, hidden_dim, patch_size, image_size, use_absolute_positions=False,
                 initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_range = float(initializer_range)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.use_absolute_positions = bool(use_absolute_positions)
        self.grid_size = (
            self.image_size[0] // self.patch_size,
            self.image_size[1] // self.patch_size,
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
            dtype=self.dtype_policy,
            name="proj",
        )

    def build(self, input_shape=None):
        self.proj.build((None, *self.image_size, 3))
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.cls_token = self.add_weight(
            name="cls_token", shape=(self.hidden_dim,), initializer=init
        )
        if self.use_absolute_positions:
            self.pos_embed = self.add_weight(
                name="pos_embed",
                shape=(self.num_patches + 1, self.hidden_dim),
                initializer=init,
            )
        self.built = True

    def call(self, images, patch_mask=None, mask_token=None):
        x = self.proj(images)
        x = ops.reshape(x, (-1, self.num_patches, self.hidden_dim))
        if patch_mask is not None:
            if mask_token is None:
                raise ValueError("`patch_mask` was given without a `mask_token`.")
            mask = ops.cast(patch_mask, "bool")[:, :, None]
            x = ops.where(mask, ops.cast(mask_token, x.dtype), x)
        cls = ops.cast(self.cls_token, x.dtype)[None, None, :]
        cls = ops.broadcast_to(cls, (ops.shape(x)[0], 1, self.hidden_dim))
        x = ops.concatenate([cls, x], axis=1)
        if self.use_absolute_positions:
            x = x + ops.cast(self.pos_embed, x.dtype)[None]
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches + 1, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "patch_size": self.patch_size,
                "image_size": list(self.image_size),
                "use_absolute_positions": self.use_absolute_positions,
                "initializer_range": self.initializer_range,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class TextEmbedding(keras.layers.Layer):
    """Token ids -> BERT embeddings, as HF ``BertEmbeddings`` in VLMo.

    ``LayerNorm_eps(word[id] + bert_token_type[0] (+ position[i]))``. The
    BERT token-type table keeps VLMo's two rows (only row 0 is ever used);
    absolute positions are off for Base/Large (VLMo's position type is
    relative) and on for Base+. The model-level modality-type row is added by
    the backbone after this layer. No dropout.

    Args:
        vocabulary_size: int.
        hidden_dim: int, d.
        max_sequence_length: int, rows of the absolute position table.
        use_absolute_positions: bool.
        layer_norm_epsilon: float, 1e-12 as in BERT/VLMo.
        dtype: dtype policy.

    Call arguments:
        token_ids: int (batch, T).

    Returns:
        float (batch, T, d).
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        max_sequence_length,
        use_absolute_positions=False,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.initializer_range = float(initializer_range)
        self.vocabulary_size = int(vocabulary_size)
        self.hidden_dim = int(hidden_dim)
        self.max_sequence_length = int(max_sequence_length)
        self.use_absolute_positions = bool(use_absolute_positions)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        init = keras.initializers.RandomNormal(stddev=self.initializer_range)
        self.word_embeddings = keras.layers.Embedding(
            self.vocabulary_size, self.hidden_dim, embeddings_initializer=init,
            dtype=self.dtype_policy, name="word_embeddings",
        )
        self.token_type_embeddings = keras.layers.Embedding(
            2, self.hidden_dim, embeddings_initializer=init,
            dtype=self.dtype_policy, name="token_type_embeddings",
        )
        self.position_embeddings = None
        if self.use_absolute_positions:
            self.position_embeddings = PositionEmbedding(
                self.max_sequence_length, initializer=init,
                dtype=self.dtype_policy, name="position_embeddings",
            )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="LayerNorm",
        )

    def build(self, input_shape):
        self.word_embeddings.build(input_shape)
        self.token_type_embeddings.build(input_shape)
        out_shape = tuple(input_shape) + (self.hidden_dim,)
        if self.position_embeddings is not None:
            self.position_embeddings.build(out_shape)
        self.layer_norm.build(out_shape)
        self.built = True

    def call(self, token_ids):
        x = self.word_embeddings(token_ids)
        x = x + ops.cast(self.token_type_embeddings.embeddings[0], x.dtype)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(x)
        return self.layer_norm(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "max_sequence_length": self.max_sequence_length,
                "use_absolute_positions": self.use_absolute_positions,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "initializer_range": self.initializer_range,
            }
        )
        return config
