"""The stack of MoME blocks with its shared relative bias and final norm."""

import keras

from vlbeit_keras.layers.mome_block import MoMEBlock
from vlbeit_keras.layers.relative_position_bias import RelativePositionBias

MODALITIES = ("image", "text", "image_text")


def static_length(x, axis=1, what="sequence"):
    """``x.shape[axis]`` as a Python int, or a clear error if it is unknown.

    Relative-bias indices and MoME routing are built from static lengths, so
    inputs must be padded to fixed lengths (as required under JAX jit anyway).
    """
    n = x.shape[axis]
    if n is None:
        raise ValueError(
            f"The {what} length (axis {axis}) must be static; pad inputs to a "
            f"fixed length. Received shape {tuple(x.shape)}."
        )
    return int(n)


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MoMEEncoder(keras.layers.Layer):
    """MoME Transformer: ``num_layers`` blocks, shared relative bias, final norm.

    Routing per input modality (VLMo ``vlmo_module.py`` ``infer`` /
    ``infer_text`` / ``infer_image``; MODEL_SPEC §3.2):

    ============  ==========================  ==========================
    modality      blocks < L - num_vl_layers  top ``num_vl_layers`` blocks
    ============  ==========================  ==========================
    image         V-FFN                       V-FFN (VL-FFN if use_vl_expert)
    text          L-FFN                       L-FFN (VL-FFN if use_vl_expert)
    image_text    split: text->L, image->V    VL-FFN
    ============  ==========================  ==========================

    Args:
        num_layers, num_heads, hidden_dim, intermediate_dim: sizes.
        num_vl_layers: int, blocks at the top with a VL-FFN.
        grid_size: (Hp, Wp) image patch grid.
        relative_text_length: int L0 of the relative table, or None when the
            model uses absolute positions (no relative bias).
        expert_type, layerscale_init, layer_norm_epsilon, initializer_range:
            see ``MoMEBlock``.
        drop_path_rate: float, maximum stochastic-depth rate, linearly
            increasing from 0 (first block) to this value (last block).
        remat: bool, gradient checkpointing in every block (``MoMEBlock``).
        dtype: dtype policy.

    Call arguments:
        x: float (batch, S, d) embedded tokens; for ``image_text`` the text
            tokens come first and the last N + 1 tokens are the image.
        padding_mask: bool (batch, S), True = attend.
        modality: ``"image"``, ``"text"`` or ``"image_text"`` (static).
        use_vl_expert: bool; for single-modality inputs, use the VL-FFN in the
            top layers (VLMo's ``cls_vlffn_feats`` path). Default False.
        return_hidden_states: bool; also return each block's output (before
            the final norm).

    Returns:
        float (batch, S, d) after the final LayerNorm, or a tuple
        (that, list of per-block outputs) with ``return_hidden_states``.
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        num_vl_layers,
        grid_size,
        relative_text_length=None,
        expert_type="ffn",
        layerscale_init=0.1,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        remat=False,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.initializer_range = float(initializer_range)
        self.remat = bool(remat)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.num_vl_layers = int(num_vl_layers)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.relative_text_length = (
            None if relative_text_length is None else int(relative_text_length)
        )
        self.expert_type = expert_type
        self.layerscale_init = layerscale_init
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.num_image_tokens = self.grid_size[0] * self.grid_size[1] + 1
        self.vl_start = self.num_layers - self.num_vl_layers

        self.relative_position_bias = None
        if self.relative_text_length is not None:
            self.relative_position_bias = RelativePositionBias(
                self.num_heads,
                self.num_layers,
                self.grid_size,
                self.relative_text_length,
                dtype=self.dtype_policy,
                name="relative_position_bias",
            )
        self.blocks = []
        for i in range(self.num_layers):
            rate = self.drop_path_rate * i / max(self.num_layers - 1, 1)
            self.blocks.append(
                MoMEBlock(
                    self.hidden_dim,
                    self.num_heads,
                    self.intermediate_dim,
                    has_vl_expert=i >= self.vl_start,
                    expert_type=self.expert_type,
                    layerscale_init=self.layerscale_init,
                    drop_path_rate=rate,
                    layer_norm_epsilon=self.layer_norm_epsilon,
                    layer_index=i,
                    remat=self.remat,
                    initializer_range=self.initializer_range,
                    dtype=self.dtype_policy,
                    name=f"blocks_{i}",
                )
            )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )

    def build(self, input_shape):
        if self.relative_position_bias is not None:
            self.relative_position_bias.build()
        for block in self.blocks:
            block.build(input_shape)
        self.norm.build(input_shape)
        self.built = True

    def routes(self, modality, use_vl_expert=False):
        """The static route of every block for ``modality`` (a list of str)."""
        if modality not in MODALITIES:
            raise ValueError(
                f"Unknown modality {modality!r}; expected one of {MODALITIES}."
            )
        routes = []
        for i in range(self.num_layers):
            top = i >= self.vl_start
            if modality == "image_text":
                routes.append("vl" if top else "split")
            elif top and use_vl_expert:
                routes.append("vl")
            else:
                routes.append(modality)
        return routes

    def call(
        self,
        x,
        padding_mask=None,
        modality="image_text",
        use_vl_expert=False,
        return_hidden_states=False,
        training=None,
    ):
        routes = self.routes(modality, use_vl_expert)
        seq_len = static_length(x)
        bias = None
        if self.relative_position_bias is not None:
            text_length = None
            if modality == "text":
                text_length = seq_len
            elif modality == "image_text":
                text_length = seq_len - self.num_image_tokens
            bias = self.relative_position_bias.bias(modality, text_length)
        hidden_states = []
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                attention_bias=None if bias is None else bias[i],
                padding_mask=padding_mask,
                route=routes[i],
                num_image_tokens=self.num_image_tokens,
                training=training,
            )
            hidden_states.append(x)
        x = self.norm(x)
        if return_hidden_states:
            return x, hidden_states
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_vl_layers": self.num_vl_layers,
                "grid_size": list(self.grid_size),
                "relative_text_length": self.relative_text_length,
                "expert_type": self.expert_type,
                "layerscale_init": self.layerscale_init,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
                "initializer_range": self.initializer_range,
            }
        )
        return config
