"""Masked-patch pixel regression: a MIM target that needs no visual tokenizer.

MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
Sec. 3 "Reconstruction target" and the official ``models_mae.py``
``forward_loss`` with ``norm_pix_loss=True``): the target of a masked patch is
its own pixels, normalised by the mean and (unbiased) variance of that patch;
the loss is the mean squared error over the patch's pixels, averaged over
masked patches only.

Here the encoder sees the *whole* sequence with masked patches replaced by the
shared [MASK] embedding (BEiT / SimMIM style input corruption, the same input
as VL-BEiT's MIM) and a linear head predicts the pixels of each masked patch
(SimMIM's one-layer head); MAE's asymmetric encoder-decoder is not used.
"""

import keras
from keras import ops

from vlbeit_keras.objectives.base import PretrainingObjective
from vlbeit_keras.objectives.masked_modeling import image_mask_token

PIXEL_HEAD = "mim_pixel_head"


def patchify(images, patch_size):
    """float (B, H, W, 3) -> float32 (B, N, patch_size**2 * 3).

    Patches in the backbone's order (row-major over the (Hp, Wp) grid, the
    ``PatchEmbedding`` flattening); inside a patch, pixels row-major then
    channel (MAE ``patchify``: ``nchpwq -> nhwpqc``).
    """
    images = ops.cast(images, "float32")
    _, height, width, channels = ops.shape(images)
    hp, wp = height // patch_size, width // patch_size
    x = ops.reshape(images, (-1, hp, patch_size, wp, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, hp * wp, patch_size * patch_size * channels))


def normalized_pixel_targets(images, positions, patch_size, norm_pix_loss=True, eps=1e-6):
    """Per-patch normalised pixels of the patches at ``positions``.

    Args:
        images: float (B, H, W, 3), the *unmasked* images.
        positions: int (B, P), patch indices 0..N-1.
        patch_size: int.
        norm_pix_loss: normalise each patch to zero mean and unit variance
            (MAE's default for its best results); False = raw pixels.
        eps: added to the variance (MAE: 1e-6).

    Returns:
        float32 (B, P, patch_size**2 * 3), no gradient.
    """
    patches = patchify(images, patch_size)
    idx = ops.cast(positions, "int32")[..., None]
    target = ops.take_along_axis(patches, idx, axis=1)
    if norm_pix_loss:
        n = ops.shape(target)[-1]
        mean = ops.mean(target, axis=-1, keepdims=True)
        # Unbiased variance, as torch's Tensor.var in MAE's forward_loss.
        var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (n - 1)
        target = (target - mean) / ops.sqrt(var + eps)
    return ops.stop_gradient(target)


def masked_mse(predictions, targets, weights):
    """Mean over pixels, then weighted mean over masked patches (float32).

    Args:
        predictions, targets: float (B, P, D).
        weights: float (B, P), 1 for real masked patches, 0 for padding
            entries of the fixed-size position list.

    Returns:
        (loss, count): float32 scalars; loss is 0 when no patch is masked.
    """
    predictions = ops.cast(predictions, "float32")
    weights = ops.cast(weights, "float32")
    per_patch = ops.mean(ops.square(predictions - ops.cast(targets, "float32")), axis=-1)
    count = ops.sum(weights)
    return ops.sum(per_patch * weights) / ops.maximum(count, 1.0), count


@keras.saving.register_keras_serializable(package="vlbeit_mae_pixel")
class PixelRegressionHead(keras.layers.Layer):
    """Gather masked patch states, then Dense(d -> patch_size**2 * 3).

    Args:
        patch_size: int, the backbone's patch side.
        channels: int, 3.

    Call arguments:
        patch_states: float (batch, N, d), patch tokens without [I_CLS].
        mask_positions: int (batch, P).

    Returns:
        float32 (batch, P, patch_size**2 * channels) predicted pixels.
    """

    def __init__(self, patch_size, channels=3, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.channels = int(channels)
        self.dense = keras.layers.Dense(
            self.patch_size * self.patch_size * self.channels,
            kernel_initializer="glorot_uniform",  # MAE initialises nn.Linear with xavier_uniform
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, patch_states_shape, mask_positions_shape=None):
        self.dense.build((None, None, patch_states_shape[-1]))
        self.built = True

    def call(self, patch_states, mask_positions):
        idx = ops.cast(mask_positions, "int32")[..., None]
        x = ops.take_along_axis(patch_states, idx, axis=1)
        return ops.cast(self.dense(x), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "channels": self.channels})
        return config


def pixel_head(pretrainer):
    """The pretrainer's shared :class:`PixelRegressionHead` (created once)."""
    backbone = pretrainer.backbone

    def factory():
        head = PixelRegressionHead(backbone.patch_size, dtype=backbone.dtype_policy, name=PIXEL_HEAD)
        head.build((None, None, backbone.hidden_dim))
        return head

    return pretrainer.shared_layer(PIXEL_HEAD, factory)


class MaskedPixelRegression(PretrainingObjective):
    """MIM with normalised-pixel regression targets (``"mim_pixel"``).

    Stream ``"image"`` (the built-in MIM's fields): ``images`` (B, H, W, 3)
    unmasked, normalised to [-1, 1]; ``patch_mask`` (B, N) bool, True =
    replaced by the [MASK] embedding (shared with ``mim``/``mvlm`` when
    combined); ``image_mask_positions`` (B, P) int32; ``image_mask_weights``
    (B, P) float. No visual tokenizer is needed. Reported metric:
    ``mim_pixel_loss``.

    Args:
        weight: float, multiplier of this loss in the pretrainer's total.
        norm_pix_loss: bool, per-patch normalised targets (True, MAE).
        eps: float, variance epsilon of the normalisation (1e-6, MAE).
    """

    stream = "image"
    metric_names = ("loss",)

    def __init__(self, weight=1.0, norm_pix_loss=True, eps=1e-6):
        super().__init__(weight)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.eps = float(eps)

    def build(self, pretrainer):
        pixel_head(pretrainer)
        image_mask_token(pretrainer)

    def call(self, pretrainer, inputs, training=False):
        out = pretrainer.backbone.encode_image(
            inputs["images"],
            patch_mask=inputs["patch_mask"],
            mask_token=image_mask_token(pretrainer)(),
            training=training,
        )
        states = out["image_sequence_output"][:, 1:]  # drop [I_CLS]
        return {"pixels": pixel_head(pretrainer)(states, inputs["image_mask_positions"])}

    def compute_loss(self, pretrainer, inputs, predictions):
        targets = normalized_pixel_targets(
            inputs["images"],
            inputs["image_mask_positions"],
            pretrainer.backbone.patch_size,
            norm_pix_loss=self.norm_pix_loss,
            eps=self.eps,
        )
        loss, _ = masked_mse(predictions["pixels"], targets, inputs["image_mask_weights"])
        return {"loss": loss}

    def get_config(self):
        return {**super().get_config(), "norm_pix_loss": self.norm_pix_loss, "eps": self.eps}
