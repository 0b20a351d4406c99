"""Shared multi-head self-attention of the MoME block."""

import keras
from keras import ops

# Finite masking constant for float32 logits: exp(-1e9 - max) underflows to 0
# exactly, and a fully masked row stays finite (uniform) instead of NaN.
MASK_VALUE = -1e9


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention with VLMo/BEiT's q/v biases and relative bias.

    Follows VLMo ``multiway_transformer.py`` ``Attention``: one fused ``qkv``
    projection without bias plus learnable ``q_bias`` and ``v_bias`` (the key
    bias is fixed at zero); q scaled by ``head_dim ** -0.5``; logits and softmax
    in float32 (also under mixed precision); relative position bias added per
    head, then padded keys masked, softmax, probabilities cast back to the
    compute dtype, weighted sum of v, output projection ``proj`` (with bias).
    No attention dropout.

    Args:
        hidden_dim: int, model width d (a multiple of ``num_heads``).
        num_heads: int.
        kernel_initializer: initializer of ``qkv``.
        output_kernel_initializer: initializer of ``proj``.
        dtype: dtype policy.

    Call arguments:
        x: float (batch, seq, d), compute dtype.
        attention_bias: optional float (heads, seq, seq) or
            (batch, heads, seq, seq), added to the float32 logits.
        padding_mask: optional bool/int (batch, seq), True/1 = the key may be
            attended to. Masked keys get a finite large negative logit
            (:data:`MASK_VALUE`), so a query whose keys are all masked gets a
            uniform (finite) distribution rather than NaN.

    Returns:
        float (batch, seq, d) in the compute dtype.
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim` must be divisible by `num_heads`; received "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}."
            )
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.hidden_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )
        self.qkv = keras.layers.Dense(
            3 * self.hidden_dim,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.proj = keras.layers.Dense(
            self.hidden_dim,
            kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy,
            name="proj",
        )

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.q_bias = self.add_weight(
            name="q_bias", shape=(self.hidden_dim,), initializer="zeros"
        )
        self.v_bias = self.add_weight(
            name="v_bias", shape=(self.hidden_dim,), initializer="zeros"
        )
        self.built = True

    def call(self, x, attention_bias=None, padding_mask=None):
        seq_len = ops.shape(x)[1]
        qkv_bias = ops.concatenate(
            [self.q_bias, ops.zeros((self.hidden_dim,), self.q_bias.dtype), self.v_bias]
        )
        qkv = self.qkv(x) + ops.cast(qkv_bias, self.compute_dtype)
        qkv = ops.reshape(qkv, (-1, seq_len, 3, self.num_heads, self.head_dim))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = q * ops.cast(self.scale, q.dtype)
        logits = ops.einsum(
            "bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32")
        )
        if attention_bias is not None:
            attention_bias = ops.cast(attention_bias, "float32")
            if len(attention_bias.shape) == 3:
                attention_bias = attention_bias[None]
            logits = logits + attention_bias
        if padding_mask is not None:
            key_mask = ops.cast(padding_mask, "bool")[:, None, None, :]
            logits = ops.where(key_mask, logits, MASK_VALUE)
        probs = ops.softmax(logits, axis=-1)
        probs = ops.cast(probs, self.compute_dtype)
        out = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        out = ops.reshape(out, (-1, seq_len, self.hidden_dim))
        return self.proj(out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer
                ),
            }
        )
        return config
