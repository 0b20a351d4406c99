"""The feed-forward expert of the MoME block (V-FFN, L-FFN, VL-FFN)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class FeedForwardExpert(keras.layers.Layer):
    """Pre-normed two-layer feed-forward expert: ``fc2(gelu(fc1(norm(x))))``.

    One expert of the Mixture-of-Modality-Experts pool (VLMo
    ``multiway_transformer.py``: ``norm2_<m>`` + ``mlp_<m>``). Every MoME block
    holds one per modality (text = L-FFN, image = V-FFN, and in the top layers
    vl = VL-FFN); this is the built-in expert kind ``"ffn"``.

    Args:
        hidden_dim: int, model width d.
        intermediate_dim: int, hidden width of the FFN (4d in all presets).
        layer_norm_epsilon: float, epsilon of the pre-FFN LayerNorm (1e-6).
        kernel_initializer: initializer of ``fc1``.
        output_kernel_initializer: initializer of ``fc2`` (BEiT rescales it by
            1/sqrt(2*layer) ; the block passes the scaled one).
        dtype: dtype policy.

    Call arguments:
        x: float tensor (batch, seq, hidden_dim) in the compute dtype.

    Returns:
        Tensor of the same shape and compute dtype. The activation is the exact
        (erf) GELU, as PyTorch ``nn.GELU()`` in VLMo; the LayerNorm is computed
        in float32.
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        layer_norm_epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer or kernel_initializer
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.fc1 = keras.layers.Dense(
            self.intermediate_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="fc1",
        )
        self.fc2 = keras.layers.Dense(
            self.hidden_dim,
            kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy,
            name="fc2",
        )

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x, training=None):
        h = self.fc1(self.norm(x))
        h = ops.gelu(h, approximate=False)
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
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer
                ),
            }
        )
        return config
