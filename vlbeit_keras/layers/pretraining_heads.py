"""Pretraining heads: the [MASK] image embedding and the MIM head.

The MLM head is keras-hub's ``MaskedLMHead`` (same layout as VLMo's
``heads.py`` ``MLMHead``: Dense(d->d) + GELU + LayerNorm + decoder + bias).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MaskTokenEmbedding(keras.layers.Layer):
    """A learnable [MASK] vector that replaces masked patch embeddings.

    BEiT ``modeling_pretrain.py`` (``mask_token``); shared by MIM and MVLM.
    Initialised truncated-normal(0.02) (MODEL_SPEC §3.4).

    Args:
        hidden_dim: int, d.
        initializer_range: float, std of the initialisation (the backbone's).

    Call returns the (hidden_dim,) vector (the ``mask_token`` argument of
    ``VLBEiTBackbone.encode_image``); ``call`` takes no tensor input.
    """

    def __init__(self, hidden_dim, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.initializer_range = float(initializer_range)

    def build(self, input_shape=None):
        self.token = self.add_weight(
            name="mask_token",
            shape=(self.hidden_dim,),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
        )
        self.built = True

    def call(self, inputs=None):
        return self.token

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_dim": self.hidden_dim, "initializer_range": self.initializer_range})
        return config


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MaskedImageModelingHead(keras.layers.Layer):
    """MIM head: gather masked patch states, then Dense(d -> codebook size).

    BEiT ``modeling_pretrain.py`` ``lm_head`` applied to the final-normed
    hidden states at masked positions only (the gather comes first, so the
    codebook projection costs P, not N, positions per image).

    Args:
        codebook_size: int K, number of visual tokens.
        initializer_range: float, std of the kernel initialisation (the
            backbone's).

    Call arguments:
        patch_states: float (batch, N, d), patch tokens without [I_CLS].
        mask_positions: int (batch, P), patch indices 0..N-1.

    Returns:
        float32 logits (batch, P, K).
    """

    def __init__(self, codebook_size, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.codebook_size = int(codebook_size)
        self.initializer_range = float(initializer_range)
        self.dense = keras.layers.Dense(
            self.codebook_size,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, patch_states_shape, mask_positions_shape=None):
        self.dense.build((None, None, patch_states_shape[-1]))
        self.built = True

    def call(self, patch_states, mask_positions):
        x = ops.take_along_axis(patch_states, ops.cast(mask_positions, "int32")[..., None], axis=1)
        return ops.cast(self.dense(x), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"codebook_size": self.codebook_size,
                       "initializer_range": self.initializer_range})
        return config
