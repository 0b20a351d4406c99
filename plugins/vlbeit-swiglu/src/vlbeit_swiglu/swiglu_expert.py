"""The SwiGLU feed-forward expert (Shazeer 2020, "GLU Variants Improve Transformer")."""

import math

import keras
from keras import ops


def swiglu_hidden_dim(intermediate_dim, ratio=2.0 / 3.0, multiple_of=8):
    """Hidden width of a SwiGLU FFN with about the parameters of a GELU FFN.

    A GELU FFN has two ``d x intermediate_dim`` matrices, SwiGLU three
    ``d x hidden``; ``hidden = 2/3 * intermediate_dim`` keeps the count equal
    (Shazeer 2020, Sec. 2: "we reduce the number of hidden units ... by a
    factor of 2/3"). Like LLaMA (``multiple_of``, 256 there) the width is
    rounded *up* to a multiple of ``multiple_of`` (8 here, so tiny test models
    stay tiny and widths stay tensor-core friendly).

    Examples: 3072 (Base, 4 * 768) -> 2048 exactly; 4096 (Large) -> 2736;
    64 (``vlbeit_tiny``) -> 48.

    Args:
        intermediate_dim: int > 0, the backbone's ``intermediate_dim``.
        ratio: float > 0.
        multiple_of: int >= 1.

    Returns:
        int, the hidden width.

    Raises:
        ValueError: a non-positive argument.
    """
    if intermediate_dim < 1 or ratio <= 0 or multiple_of < 1:
        raise ValueError(
            f"swiglu_hidden_dim needs intermediate_dim >= 1, ratio > 0, multiple_of >= 1; "
            f"got intermediate_dim={intermediate_dim}, ratio={ratio}, multiple_of={multiple_of}."
        )
    # round() first so 2/3 * 3072 = 2047.9999... does not become 2056.
    raw = round(ratio * intermediate_dim, 6)
    return int(multiple_of * math.ceil(raw / multiple_of))


@keras.saving.register_keras_serializable(package="vlbeit_swiglu")
class SwiGLUExpert(keras.layers.Layer):
    """Pre-normed SwiGLU expert: ``fc2(silu(fc1_g(n)) * fc1_x(n))``, ``n = norm(x)``.

    A drop-in expert kind for the MoME block (``VLBEiTBackbone(...,
    expert_type="swiglu")``): same constructor contract as the built-in
    ``vlbeit_keras.layers.feed_forward_expert.FeedForwardExpert`` and, like it,
    it owns its pre-FFN LayerNorm (VLMo's ``norm2_<modality>``); the block adds
    the shared layerscale and the residual.

    Follows Shazeer (2020), "GLU Variants Improve Transformer", eq. 6:
    ``FFN_SwiGLU(x) = (Swish_1(x W) * x V) W2``, Swish_1 = SiLU. Sublayer names
    follow timm's ``SwiGLU`` (``fc1_g`` gate, ``fc1_x`` value, ``fc2``) so
    weights from such checkpoints map by name. Unlike the paper (and LLaMA)
    the dense layers keep their biases by default, as the GELU expert it
    replaces does, so the two kinds differ only in the FFN function.

    Args:
        hidden_dim: int, model width d (input and output width).
        intermediate_dim: int, the backbone's FFN width (4d in the presets);
            the SwiGLU hidden width is ``swiglu_hidden_dim(intermediate_dim,
            hidden_ratio, multiple_of)`` (2/3 of it, rounded up to a multiple
            of 8: about the parameter count of the GELU expert).
        layer_norm_epsilon: float, epsilon of the pre-FFN LayerNorm (1e-6).
        kernel_initializer: initializer of ``fc1_g`` and ``fc1_x``.
        output_kernel_initializer: initializer of ``fc2`` (the block passes
            BEiT's depth-rescaled one); defaults to ``kernel_initializer``.
        hidden_ratio: float, 2/3.
        multiple_of: int, 8.
        use_bias: bool, biases on the three dense layers (True).
        dtype: dtype policy.

    Call arguments:
        x: float (batch, seq, hidden_dim) in the compute dtype.
        training: unused (no dropout), accepted for the expert contract.

    Returns:
        Tensor of the same shape and compute dtype. The LayerNorm runs in
        float32 under mixed precision (Keras ``LayerNormalization``).

    Example:
    ```python
    import vlbeit_keras
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(
        "vlbeit_tiny", load_weights=False, expert_type="swiglu")
    ```
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        layer_norm_epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        hidden_ratio=2.0 / 3.0,
        multiple_of=8,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.hidden_ratio = float(hidden_ratio)
        self.multiple_of = int(multiple_of)
        self.use_bias = bool(use_bias)
        self.swiglu_dim = swiglu_hidden_dim(self.intermediate_dim, self.hidden_ratio, self.multiple_of)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.fc1_g = self._dense(self.swiglu_dim, self.kernel_initializer, "fc1_g")
        self.fc1_x = self._dense(self.swiglu_dim, self.kernel_initializer, "fc1_x")
        self.fc2 = self._dense(self.hidden_dim, self.output_kernel_initializer, "fc2")

    def _dense(self, units, initializer, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.fc1_g.build(input_shape)
        self.fc1_x.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.swiglu_dim,))
        self.built = True

    def call(self, x, training=None):
        h = self.norm(x)
        h = ops.silu(self.fc1_g(h)) * self.fc1_x(h)
        return self.fc2(h)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer
                ),
                "hidden_ratio": self.hidden_ratio,
                "multiple_of": self.multiple_of,
                "use_bias": self.use_bias,
            }
        )
        return config
