"""The VLMo-style MLP classifier head of the VQA and NLVR2 tasks."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class MLPClassifierHead(keras.layers.Layer):
    """Dense -> LayerNorm -> exact GELU -> Dense (VLMo ``vqa_classifier`` /
    ``nlvr2_classifier``).

    VLMo (``vlmo/vlmo/modules/vlmo_module.py``) builds
    ``nn.Sequential(Linear(in, hidden), LayerNorm(hidden), GELU(), Linear(hidden, n))``
    with PyTorch defaults (LayerNorm eps 1e-5, erf GELU) and initialises the
    linear layers from N(0, 0.02) with zero bias. Sublayer names map to the
    VLMo indices: ``fc1`` = 0, ``norm`` = 1, ``fc2`` = 3.

    Used with in = hidden = 2d for NLVR2 (two pooled vectors concatenated)
    and in = d, hidden = 2d for VQA (MODEL_SPEC §9.1, §9.2).

    Args:
        hidden_dim: int, width of the hidden layer (2d in VLMo).
        num_classes: int >= 1, output logits (3,129 for VQA v2; 2 for NLVR).
        layer_norm_epsilon: float, 1e-5 (PyTorch default, as in VLMo).
        kernel_initializer: initializer of both Dense kernels
            (default N(0, 0.02)).
        dtype: dtype policy.

    Call arguments:
        x: float (batch, in_dim).

    Returns:
        float (batch, num_classes) logits in the compute dtype.
    """

    def __init__(
        self,
        hidden_dim,
        num_classes,
        layer_norm_epsilon=1e-5,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {num_classes!r}.")
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"`hidden_dim` must be a positive int; got {hidden_dim!r}.")
        self.hidden_dim = hidden_dim
        self.num_classes = num_classes
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.fc1 = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="fc1",
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.fc2 = keras.layers.Dense(
            num_classes,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="fc2",
        )

    def build(self, input_shape):
        self.fc1.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_dim,)
        self.norm.build(hidden_shape)
        self.fc2.build(hidden_shape)
        self.built = True

    def call(self, x):
        x = self.fc1(x)
        x = self.norm(x)
        x = ops.gelu(x, approximate=False)
        return self.fc2(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_classes": self.num_classes,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
