"""The Mixture-of-Modality-Experts (MoME) Transformer block."""

import math

import keras
from keras import ops

from vlbeit_keras.layers.attention import MultiHeadSelfAttention
from vlbeit_keras.plugins import get_expert

# Expert slots and the VLMo checkpoint names they follow (mlp_<m>, norm2_<m>).
EXPERT_NAMES = {"text": "mlp_text", "image": "mlp_imag", "vl": "mlp_vl"}
ROUTES = ("text", "image", "vl", "split")


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MoMEBlock(keras.layers.Layer):
    """Pre-LN Transformer block with shared attention and modality experts.

    VLMo ``multiway_transformer.py`` ``Block``::

        x = x + DropPath(gamma_1 * Attn(norm1(x), mask, relbias_l))
        x = x + DropPath(gamma_2 * Expert_e(x))     # Expert_e = FFN_e(norm2_e(.))

    ``norm1``, the attention, ``gamma_1`` and ``gamma_2`` are shared by every
    modality; each expert owns its pre-FFN LayerNorm and FFN. Every block has a
    text expert (L-FFN, ``mlp_text``) and an image expert (V-FFN,
    ``mlp_imag``); blocks in the top ``num_vl_layers`` of the backbone also
    have a vision-language expert (VL-FFN, ``mlp_vl``).

    Routing (``route`` call argument, a static Python string):
        ``"text"``: L-FFN on every token. ``"image"``: V-FFN on every token.
        ``"vl"``: VL-FFN on every token (only in blocks with ``has_vl_expert``).
        ``"split"``: image-text input below the VL layers: the first
        ``seq - num_image_tokens`` tokens (text, text-first order) go to the
        L-FFN, the last ``num_image_tokens`` to the V-FFN, concatenated back.

    Args:
        hidden_dim: int, width d.
        num_heads: int, attention heads.
        intermediate_dim: int, FFN hidden width.
        has_vl_expert: bool, whether this block has a VL-FFN.
        expert_type: str, registered expert kind (``"ffn"`` built in; plugins
            add more through the ``register_experts`` hook).
        layerscale_init: float or None; initial value of ``gamma_1``/``gamma_2``
            (0.1 in VLMo Base/Large); None disables layerscale (Base+).
        drop_path_rate: float, stochastic-depth rate of this block.
        layer_norm_epsilon: float, 1e-6 in VLMo.
        layer_index: int, 0-based depth; the attention ``proj`` and expert
            ``fc2`` kernels are initialised with std
            ``initializer_range`` / sqrt(2 (l + 1)) (BEiT ``fix_init_weight``).
        initializer_range: float, std of the truncated-normal kernel
            initialisation (0.02 in BEiT / VLMo).
        remat: bool, gradient checkpointing: the attention branch
            (norm1 -> attention -> layerscale) and the expert branch (expert
            -> layerscale) are wrapped in ``keras.remat`` (the primitive
            ``keras.RematScope`` applies: ``jax.checkpoint``,
            ``tf.recompute_grad``, ``torch.utils.checkpoint``), so only the
            block input and the mid-block residual are kept for the backward
            pass and the rest is recomputed. Outputs and gradients are
            unchanged. (A ``RematScope`` around the block itself cannot work:
            it passes every call argument, including the static ``route``
            string, through ``jax.checkpoint``.) Drop path stays outside the
            recomputed functions, so its random mask is drawn once.
        dtype: dtype policy.

    Call arguments:
        x: float (batch, seq, d).
        attention_bias: float (heads, seq, seq), this layer's relative bias.
        padding_mask: bool (batch, seq), True = attend.
        route: one of ``"text"``, ``"image"``, ``"vl"``, ``"split"``.
        num_image_tokens: int, needed by ``"split"``: N + 1 image tokens at the
            end of the sequence.

    Returns:
        float (batch, seq, d).

    Raises:
        ValueError: unknown route, ``"vl"`` on a block without a VL-FFN, or
            ``"split"`` without ``num_image_tokens``.
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        has_vl_expert=False,
        expert_type="ffn",
        layerscale_init=0.1,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        layer_index=0,
        remat=False,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = bool(remat)
        self.initializer_range = float(initializer_range)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.has_vl_expert = bool(has_vl_expert)
        self.expert_type = expert_type
        self.layerscale_init = (
            None if layerscale_init is None else float(layerscale_init)
        )
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.layer_index = int(layer_index)

        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        output_init = keras.initializers.TruncatedNormal(
            stddev=self.initializer_range / math.sqrt(2.0 * (self.layer_index + 1))
        )
        self.norm1 = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm1"
        )
        self.attn = MultiHeadSelfAttention(
            self.hidden_dim,
            self.num_heads,
            kernel_initializer=init,
            output_kernel_initializer=output_init,
            dtype=self.dtype_policy,
            name="attn",
        )
        expert_cls = get_expert(expert_type)
        slots = ("text", "image", "vl") if self.has_vl_expert else ("text", "image")
        self.expert_slots = slots
        for slot in slots:
            expert = expert_cls(
                hidden_dim=self.hidden_dim,
                intermediate_dim=self.intermediate_dim,
                layer_norm_epsilon=self.layer_norm_epsilon,
                kernel_initializer=init,
                output_kernel_initializer=output_init,
                dtype=self.dtype_policy,
                name=EXPERT_NAMES[slot],
            )
            # Attribute names follow the VLMo checkpoint (mlp_text, mlp_imag, mlp_vl).
            setattr(self, EXPERT_NAMES[slot], expert)
        # Drop path = per-sample dropout of the whole residual branch.
        self.drop_path = keras.layers.Dropout(
            self.drop_path_rate, noise_shape=(None, 1, 1), dtype=self.dtype_policy,
            name="drop_path",
        )

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build(input_shape)
        for slot in self.expert_slots:
            self.expert(slot).build(input_shape)
        if self.layerscale_init is not None:
            init = keras.initializers.Constant(self.layerscale_init)
            self.gamma_1 = self.add_weight(
                name="gamma_1", shape=(self.hidden_dim,), initializer=init
            )
            self.gamma_2 = self.add_weight(
                name="gamma_2", shape=(self.hidden_dim,), initializer=init
            )
        self.built = True

    def expert(self, slot):
        """The expert layer of ``slot`` (``"text"``, ``"image"`` or ``"vl"``)."""
        return getattr(self, EXPERT_NAMES[slot])

    def _scale(self, x, gamma):
        if self.layerscale_init is None:
            return x
        return x * ops.cast(gamma, x.dtype)

    def _experts(self, x, route, num_image_tokens, training):
        if route == "text":
            return self.mlp_text(x, training=training)
        if route == "image":
            return self.mlp_imag(x, training=training)
        if route == "vl":
            if not self.has_vl_expert:
                raise ValueError(
                    f"route='vl' needs a VL-FFN, but block {self.layer_index} "
                    "is below the VL-FFN layers (has_vl_expert=False)."
                )
            return self.mlp_vl(x, training=training)
        if route == "split":
            if num_image_tokens is None:
                raise ValueError("route='split' needs `num_image_tokens`.")
            text = self.mlp_text(x[:, :-num_image_tokens], training=training)
            image = self.mlp_imag(x[:, -num_image_tokens:], training=training)
            return ops.concatenate([text, image], axis=1)
        raise ValueError(f"Unknown route {route!r}; expected one of {ROUTES}.")

    def _attention_branch(self, x, attention_bias, padding_mask):
        h = self.attn(
            self.norm1(x), attention_bias=attention_bias, padding_mask=padding_mask
        )
        return self._scale(h, getattr(self, "gamma_1", None))

    def _expert_branch(self, x, route, num_image_tokens, training):
        h = self._experts(x, route, num_image_tokens, training)
        return self._scale(h, getattr(self, "gamma_2", None))

    def call(
        self,
        x,
        attention_bias=None,
        padding_mask=None,
        route="text",
        num_image_tokens=None,
        training=None,
    ):
        if route not in ROUTES:
            raise ValueError(f"Unknown route {route!r}; expected one of {ROUTES}.")
        if self.remat:
            # Differentiable tensors are arguments of the recomputed function
            # (tf.recompute_grad only differentiates arguments and variables);
            # the boolean mask and the static routing are closed over.
            if attention_bias is None:
                h = keras.remat(lambda x: self._attention_branch(x, None, padding_mask))(x)
            else:
                h = keras.remat(
                    lambda x, bias: self._attention_branch(x, bias, padding_mask)
                )(x, attention_bias)
        else:
            h = self._attention_branch(x, attention_bias, padding_mask)
        x = x + self.drop_path(h, training=training)
        if self.remat:
            h = keras.remat(
                lambda x: self._expert_branch(x, route, num_image_tokens, training)
            )(x)
        else:
            h = self._expert_branch(x, route, num_image_tokens, training)
        x = x + self.drop_path(h, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "has_vl_expert": self.has_vl_expert,
                "expert_type": self.expert_type,
                "layerscale_init": self.layerscale_init,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "layer_index": self.layer_index,
                "remat": self.remat,
                "initializer_range": self.initializer_range,
            }
        )
        return config
