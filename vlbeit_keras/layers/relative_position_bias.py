"""VLMo's joint relative-position-bias table, shared by all layers."""

import keras
import numpy as np
from keras import ops


def image_relative_position_index(grid_size):
    """BEiT/VLMo image index matrix into the relative table.

    Args:
        grid_size: (Hp, Wp) patch grid.

    Returns:
        int32 NumPy array (N + 1, N + 1), N = Hp * Wp, tokens ordered
        [I_CLS] then patches row-major. Patch entries index the
        (2Hp - 1)(2Wp - 1) offsets with the **query minus key** rule
        (row_i - row_j + Hp - 1) * (2Wp - 1) + (col_i - col_j + Wp - 1);
        row 0 (CLS query) = M, column 0 (CLS key) = M + 1, [0, 0] = M + 2,
        with M = (2Hp - 1)(2Wp - 1). (VLMo ``vlmo_module.py``
        ``build_relative_position_embed``; BEiT ``modeling_finetune.py``.)
    """
    hp, wp = grid_size
    rows, cols = np.meshgrid(np.arange(hp), np.arange(wp), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    d_row = rows[:, None] - rows[None, :] + hp - 1
    d_col = cols[:, None] - cols[None, :] + wp - 1
    m = (2 * hp - 1) * (2 * wp - 1)
    index = np.zeros((hp * wp + 1,) * 2, dtype=np.int32)
    index[1:, 1:] = d_row * (2 * wp - 1) + d_col
    index[0, :] = m
    index[:, 0] = m + 1
    index[0, 0] = m + 2
    return index


def text_relative_position_index(text_length, relative_text_length, num_image_rows):
    """VLMo text index matrix into the relative table.

    Args:
        text_length: T, number of text tokens indexed (T <= L0).
        relative_text_length: L0 (VLMo ``max_text_len_of_initckpt``).
        num_image_rows: nrel = M + 3, the rows used by the image part.

    Returns:
        int32 NumPy array (T, T). For tokens i, j >= 1 the index is
        (j - i) + L0 + nrel (**key minus query**, the opposite sign of the
        image rule); row 0 ([T_CLS] query) = R - 3, column 0 ([T_CLS] key)
        = R - 2, [0, 0] = R - 1, with R = nrel + 2 L0 + 2.
    """
    r = num_image_rows + 2 * relative_text_length + 2
    pos = np.arange(text_length)
    index = (pos[None, :] - pos[:, None]) + relative_text_length + num_image_rows
    index = index.astype(np.int32)
    index[0, :] = r - 3
    index[:, 0] = r - 2
    index[0, 0] = r - 1
    return index


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class RelativePositionBias(keras.layers.Layer):
    """One learnable relative-position-bias table for every layer (VLMo layout).

    Table shape (R, heads * layers), zero-initialised; layer l uses columns
    l * heads ... (l + 1) * heads - 1. Rows, with M = (2Hp - 1)(2Wp - 1),
    nrel = M + 3 and L0 = ``relative_text_length``:

    ========================  =============================================
    rows                      meaning
    ========================  =============================================
    0 ... M - 1               image patch -> patch offsets
    M, M + 1, M + 2           [I_CLS] query, [I_CLS] key, [I_CLS] -> [I_CLS]
    nrel                      any text query -> any image key
    nrel + 1                  any image query -> any text key
    nrel + 2 ... nrel+2L0-2   text -> text offsets (tokens >= 1)
    R - 3, R - 2, R - 1       [T_CLS] query, [T_CLS] key, [T_CLS] -> [T_CLS]
    ========================  =============================================

    R = nrel + 2 L0 + 2 (1126 for a 14x14 grid and L0 = 196). Index tables are
    built in NumPy at construction and gathered with ``ops.take``; they are
    never weights. (VLMo ``vlmo_module.py`` ``build_relative_position_embed``
    and ``get_rel_pos_bias``.)

    Args:
        num_heads: int.
        num_layers: int.
        grid_size: (Hp, Wp) image patch grid (non-square allowed).
        relative_text_length: int L0, longest text the table covers.
        dtype: dtype policy (the table is float32 under mixed precision).

    Call arguments (``call`` / ``bias``):
        modality: ``"image"``, ``"text"`` or ``"image_text"`` (static string).
        text_length: int T (static), needed for ``"text"`` and ``"image_text"``.

    Returns:
        float32 (layers, heads, S, S) with S = N + 1, T or T + N + 1; the joint
        layout is text first: [[text-text, text->image], [image->text,
        image-image]].
    """

    def __init__(self, num_heads, num_layers, grid_size, relative_text_length, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.relative_text_length = int(relative_text_length)
        hp, wp = self.grid_size
        self.num_image_offsets = (2 * hp - 1) * (2 * wp - 1)
        self.num_image_rows = self.num_image_offsets + 3
        self.num_rows = self.num_image_rows + 2 * self.relative_text_length + 2
        self.num_image_tokens = hp * wp + 1
        self._image_index = image_relative_position_index(self.grid_size)
        self._text_index = text_relative_position_index(
            self.relative_text_length, self.relative_text_length, self.num_image_rows
        )

    def build(self, input_shape=None):
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=(self.num_rows, self.num_heads * self.num_layers),
            initializer="zeros",
        )
        self.built = True

    def _gather(self, index):
        """(S, S) int index -> float32 (layers, heads, S, S)."""
        s0, s1 = index.shape
        table = ops.cast(self.relative_position_bias_table, "float32")
        bias = ops.take(table, ops.convert_to_tensor(index.reshape(-1)), axis=0)
        bias = ops.reshape(bias, (s0, s1, self.num_layers, self.num_heads))
        return ops.transpose(bias, (2, 3, 0, 1))

    def _check_text_length(self, text_length):
        if text_length is None or not 1 <= text_length <= self.relative_text_length:
            raise ValueError(
                f"Text length {text_length} is outside the relative position "
                f"table, which covers 1..relative_text_length="
                f"{self.relative_text_length} tokens."
            )

    def index(self, modality, text_length=None):
        """The int32 NumPy index matrix (S, S) for ``modality``."""
        if modality == "image":
            return self._image_index
        self._check_text_length(text_length)
        text = self._text_index[:text_length, :text_length]
        if modality == "text":
            return text
        if modality != "image_text":
            raise ValueError(
                f"Unknown modality {modality!r}; expected 'image', 'text' or 'image_text'."
            )
        n = self.num_image_tokens
        top = np.concatenate(
            [text, np.full((text_length, n), self.num_image_rows, np.int32)], axis=1
        )
        bottom = np.concatenate(
            [np.full((n, text_length), self.num_image_rows + 1, np.int32), self._image_index],
            axis=1,
        )
        return np.concatenate([top, bottom], axis=0)

    def bias(self, modality, text_length=None):
        """float32 (layers, heads, S, S) bias for ``modality`` (see class doc)."""
        return self._gather(self.index(modality, text_length))

    def call(self, modality, text_length=None):
        return self.bias(modality, text_length)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "grid_size": list(self.grid_size),
                "relative_text_length": self.relative_text_length,
            }
        )
        return config
