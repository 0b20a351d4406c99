"""Resolution change and modality-row expansion when weights move between
backbones of different configurations.

Fine-tuning often runs at another image size than pretraining (224 -> 384 or
480 px, or NLVR's non-square 400x96). Only two kinds of weights depend on the
image grid (MODEL_SPEC §4.3):

- the image block of the relative-position-bias table, rows 0 .. M-1 with
  M = (2Hp-1)(2Wp-1): each column (one head of one layer) is a
  (2Hp-1) x (2Wp-1) grid of patch offsets, interpolated to (2Hp'-1) x (2Wp'-1);
  the 3 [I_CLS] rows, the 2 cross-modal rows and all text rows are copied;
- the absolute position table of Base+ (``patch_embed/pos_embed``, N + 1
  rows): the patch rows are resized bicubically as an (Hp, Wp) image, the
  [I_CLS] row is kept.

Relative-table method ``"beit_geometric_cubic"`` (the only one; its name is
recorded in task configs): BEiT's geometric-progression grid
(``beit/run_class_finetuning.py``: source offsets placed at +-(1, 1+q,
1+q+q^2, ...) with q found by bisection in [1.01, 1.5] so that the outermost
source offset reaches the target half-width; target offsets are the integers
-t..t) and a bicubic interpolating spline. BEiT used
``scipy.interpolate.interp2d(kind="cubic")``, removed in SciPy 1.14; here
``scipy.interpolate.RectBivariateSpline(kx=3, ky=3, s=0)``, the same FITPACK
interpolating spline, with the axes in (row, column) order (interp2d takes
(x = column, y = row), the transposed order). Each axis gets its own q, so
non-square grids work. Target offsets outside the source range (very large
upsampling, where q saturates at 1.5) are clamped to the range, i.e.
nearest extrapolation, as interp2d did. Computed in float64 to an explicit
output size, then cast to the variable dtype.

Absolute table: separable cubic convolution with a = -0.75 and half-pixel
centres, indices clamped at the border: exactly
``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``,
which BEiT's ``interpolate_pos_embed`` uses. Implemented in NumPy so that the
result does not depend on the Keras backend (``keras.ops.image.resize``
bicubic differs between TF/JAX (a = -0.5) and torch (a = -0.75)).
"""

import os

import numpy as np

RELATIVE_BIAS_TABLE = "transformer/relative_position_bias/relative_position_bias_table"
ABSOLUTE_POSITION_TABLE = "patch_embed/pos_embed"
MODALITY_TABLE = "modality_type_embeddings/embeddings"
RESIZE_METHODS = ("beit_geometric_cubic",)
DEFAULT_METHOD = "beit_geometric_cubic"
# Config fields that must agree between source and target backbones.
_SHAPE_FIELDS = (
    "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
    "num_vl_layers", "patch_size", "relative_text_length", "position_mode", "expert_type",
)


# ---------------------------------------------------------------------------
# Relative position bias
def beit_geometric_ratio(src_half, dst_half):
    """BEiT's bisection for the progression ratio q (tolerance 1e-6).

    Finds q in [1.01, 1.5] with 1 + q + ... + q^(src_half-1) ~ dst_half,
    using the same comparison and stopping rule as BEiT (so the same q).
    """
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        total = (1.0 - q ** src_half) / (1.0 - q)
        if total > dst_half:
            right = q
        else:
            left = q
    return q


def beit_geometric_offsets(src_side, dst_side):
    """Source and target offset coordinates along one axis.

    Args:
        src_side: int, number of source offsets (2Hp - 1, odd, >= 3).
        dst_side: int, number of target offsets (2Hp' - 1, odd).

    Returns:
        (source float64 (src_side,), target float64 (dst_side,)): source
        offsets at +-(1, 1 + q, 1 + q + q^2, ...) and 0; target offsets the
        integers -(dst_side // 2) .. dst_side // 2.
    """
    if src_side % 2 != 1 or dst_side % 2 != 1:
        raise ValueError(f"Offset grid sides must be odd; got {src_side} -> {dst_side}.")
    src_half, dst_half = src_side // 2, dst_side // 2
    q = beit_geometric_ratio(src_half, dst_half)
    distances, current = [], 1.0
    for i in range(src_half):
        distances.append(current)
        current += q ** (i + 1)
    source = np.array([-d for d in reversed(distances)] + [0.0] + distances, dtype=np.float64)
    target = np.arange(-dst_half, dst_half + 1, dtype=np.float64)
    return source, target


def resize_relative_offset_grid(grid, dst_shape, method=DEFAULT_METHOD):
    """Interpolate one (rows, cols) grid of relative-offset biases.

    Args:
        grid: float array (2Hp - 1, 2Wp - 1), rows = row offsets.
        dst_shape: (2Hp' - 1, 2Wp' - 1), explicit output size.
        method: ``"beit_geometric_cubic"``.

    Returns:
        float64 array ``dst_shape``.

    Raises:
        ValueError: unknown method, even sides, or a source side of 1.
    """
    from scipy.interpolate import RectBivariateSpline

    if method not in RESIZE_METHODS:
        raise ValueError(f"Unknown resize method {method!r}; available: {RESIZE_METHODS}.")
    grid = np.asarray(grid, dtype=np.float64)
    dst_shape = (int(dst_shape[0]), int(dst_shape[1]))
    if grid.shape == dst_shape:
        return grid.copy()
    if min(grid.shape) < 2:
        raise ValueError(
            f"Cannot interpolate a relative-offset grid of shape {grid.shape}; "
            "the source patch grid needs at least 2 patches per side."
        )
    rows_src, rows_dst = beit_geometric_offsets(grid.shape[0], dst_shape[0])
    cols_src, cols_dst = beit_geometric_offsets(grid.shape[1], dst_shape[1])
    rows_dst = np.clip(rows_dst, rows_src[0], rows_src[-1])
    cols_dst = np.clip(cols_dst, cols_src[0], cols_src[-1])
    spline = RectBivariateSpline(
        rows_src, cols_src, grid, kx=min(3, len(rows_src) - 1), ky=min(3, len(cols_src) - 1), s=0
    )
    return spline(rows_dst, cols_dst)


def resize_relative_position_bias_table(
    table, src_grid, dst_grid, relative_text_length, method=DEFAULT_METHOD
):
    """Resize a VLMo relative-position-bias table to another patch grid.

    Args:
        table: float (R, heads * layers) with
            R = (2Hs-1)(2Ws-1) + 3 + 2 + (2 L0 - 1) + 3 = M + 2 L0 + 5.
        src_grid: (Hs, Ws) patch grid the table was made for.
        dst_grid: (Hd, Wd) target patch grid.
        relative_text_length: L0 (text rows are unchanged).
        method: interpolation method (see module docstring).

    Returns:
        float64 (R', heads * layers): the image block resized per column,
        the 3 [I_CLS] rows, 2 cross-modal rows and all text rows copied.

    Raises:
        ValueError: the row count does not match ``src_grid`` and L0.
    """
    table = np.asarray(table, dtype=np.float64)
    hs, ws = (int(s) for s in src_grid)
    hd, wd = (int(s) for s in dst_grid)
    m_src = (2 * hs - 1) * (2 * ws - 1)
    expected = m_src + 2 * int(relative_text_length) + 5
    if table.ndim != 2 or table.shape[0] != expected:
        raise ValueError(
            f"Relative-bias table of shape {table.shape} does not match grid "
            f"{(hs, ws)} and relative_text_length={relative_text_length} "
            f"(expected {expected} rows)."
        )
    if (hs, ws) == (hd, wd):
        return table.copy()
    columns = [
        resize_relative_offset_grid(
            table[:m_src, c].reshape(2 * hs - 1, 2 * ws - 1), (2 * hd - 1, 2 * wd - 1), method
        ).reshape(-1)
        for c in range(table.shape[1])
    ]
    image_block = np.stack(columns, axis=1)
    return np.concatenate([image_block, table[m_src:]], axis=0)


# ---------------------------------------------------------------------------
# Absolute positions
def _cubic_weights(t, a=-0.75):
    """Keys cubic-convolution weights for taps -1, 0, 1, 2 at fraction t."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _resize_axis_bicubic(x, out_len, axis):
    """Resize one axis like torch bicubic (align_corners=False, no antialias)."""
    in_len = x.shape[axis]
    if in_len == out_len:
        return x
    scale = in_len / out_len
    src = (np.arange(out_len, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    weights = _cubic_weights(src - base)  # (out, 4)
    taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    taps = np.clip(taps, 0, in_len - 1)
    moved = np.moveaxis(x, axis, 0)  # (in, ...)
    gathered = moved[taps]  # (out, 4, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    return np.moveaxis((gathered * w).sum(axis=1), 0, axis)


def resize_absolute_position_embeddings(table, src_grid, dst_grid):
    """Resize a (N + 1, d) absolute position table to another patch grid.

    Row 0 ([I_CLS]) is kept; rows 1.. are an (Hs, Ws, d) image resized
    bicubically to (Hd, Wd) (torch ``interpolate(mode="bicubic",
    align_corners=False)`` arithmetic, float64).

    Returns:
        float64 (Hd * Wd + 1, d).
    """
    table = np.asarray(table, dtype=np.float64)
    hs, ws = (int(s) for s in src_grid)
    hd, wd = (int(s) for s in dst_grid)
    if table.shape[0] != hs * ws + 1:
        raise ValueError(
            f"Position table with {table.shape[0]} rows does not match grid {(hs, ws)} "
            f"({hs * ws + 1} rows expected)."
        )
    patches = table[1:].reshape(hs, ws, -1)
    patches = _resize_axis_bicubic(patches, hd, axis=0)
    patches = _resize_axis_bicubic(patches, wd, axis=1)
    return np.concatenate([table[:1], patches.reshape(hd * wd, -1)], axis=0)


# ---------------------------------------------------------------------------
# Moving weights between backbones
def _source_arrays(source, source_config=None):
    """(dict path -> ndarray, config dict) from a backbone, preset dir or mapping."""
    import collections.abc
    import inspect

    import keras

    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    if isinstance(source, collections.abc.Mapping):
        if source_config is None:
            raise ValueError(
                "Weights given as a mapping need `source_config` (the backbone config "
                "they were made for: image_size, patch_size, relative_text_length, ...)."
            )
        arrays = {  # NumPy arrays as they are (no copy through the backend)
            str(k): v if isinstance(v, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(v))
            for k, v in source.items()
        }
        defaults = {
            name: p.default
            for name, p in inspect.signature(VLBEiTBackbone.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        config = {**defaults, **dict(source_config)}
        if isinstance(config.get("image_size"), int):
            config["image_size"] = [config["image_size"]] * 2
        return arrays, config
    if isinstance(source, (str, os.PathLike)):
        source = VLBEiTBackbone.from_preset(os.fspath(source), load_weights=True)
    if not isinstance(source, VLBEiTBackbone):
        raise TypeError(
            "The weight source must be a VLBEiTBackbone, a preset directory or a "
            f"mapping of variable paths to arrays; got {type(source).__name__}."
        )
    arrays = {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in source.weights}
    return arrays, source.get_config()


def load_backbone_weights_resized(source, target, method=DEFAULT_METHOD, strict=True,
                                  source_config=None):
    """Copy a backbone's weights into ``target``, adapting grid-dependent ones.

    Variables are matched by ``variable.path``. Equal shapes are copied;
    the relative-bias table is resized to the target grid
    (:func:`resize_relative_position_bias_table`), the Base+ absolute table
    likewise (:func:`resize_absolute_position_embeddings`); extra
    modality-type rows of the target (NLVR2's third row) are initialised by
    copying the image row 1 (VLMo ``vlmo_module.py``), and surplus source
    rows are dropped.

    Args:
        source: a ``VLBEiTBackbone``, a keras-hub preset directory of one, or
            a mapping ``variable.path -> array`` (e.g. from a converter) with
            ``source_config``.
        target: a ``VLBEiTBackbone`` (modified in place).
        method: relative-table interpolation method.
        strict: raise when a target variable has no source (otherwise it
            keeps its initialisation).
        source_config: the backbone config of a mapping ``source``.

    Returns:
        dict with ``copied``, ``resized`` and ``missing`` lists of paths.

    Raises:
        ValueError: unknown ``method``; the two configurations differ in a shape field
            (width, depth, heads, vocabulary, patch size, L0, ...), a shape
            mismatch that cannot be adapted, or missing variables with
            ``strict``.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unknown resize method {method!r}; available: {RESIZE_METHODS}.")
    arrays, src_config = _source_arrays(source, source_config)
    dst_config = target.get_config()
    differing = [
        f"{f}: {src_config.get(f)!r} -> {dst_config.get(f)!r}"
        for f in _SHAPE_FIELDS
        if src_config.get(f) != dst_config.get(f)
    ]
    if differing:
        raise ValueError(
            "Cannot move weights between backbones whose architectures differ: "
            + "; ".join(differing)
            + ". Only image_size, num_modality_types, max_text_length, "
            "drop_path_rate and dtype may change."
        )
    src_grid = tuple(s // src_config["patch_size"] for s in src_config["image_size"])
    dst_grid = tuple(target.grid_size)
    report = {"copied": [], "resized": [], "missing": []}
    for variable in target.weights:
        path = variable.path
        if path not in arrays:
            report["missing"].append(path)
            continue
        value = arrays[path]
        shape = tuple(variable.shape)
        if value.shape == shape:
            new = value
            report["copied"].append(path)
        elif path.endswith(RELATIVE_BIAS_TABLE):
            new = resize_relative_position_bias_table(
                value, src_grid, dst_grid, src_config["relative_text_length"], method
            )
            report["resized"].append(path)
        elif path.endswith(ABSOLUTE_POSITION_TABLE):
            new = resize_absolute_position_embeddings(value, src_grid, dst_grid)
            report["resized"].append(path)
        elif path.endswith(MODALITY_TABLE) and value.shape[1:] == shape[1:]:
            # New rows (NLVR2's second-image row) start as the image row 1.
            new = np.stack([value[i] if i < value.shape[0] else value[1] for i in range(shape[0])])
            report["resized"].append(path)
        elif path.endswith("position_embeddings/embeddings") and value.shape[1:] == shape[1:] \
                and value.shape[0] >= shape[0]:
            new = value[: shape[0]]  # absolute text positions, shorter text
            report["resized"].append(path)
        else:
            raise ValueError(
                f"Variable {path!r}: source shape {value.shape} cannot be adapted "
                f"to target shape {shape}."
            )
        if new.shape != shape:
            raise AssertionError(f"{path}: adapted to {new.shape}, expected {shape}.")
        variable.assign(new.astype(variable.dtype))
    if strict and report["missing"]:
        raise ValueError(
            f"{len(report['missing'])} target variables have no source weights, "
            f"e.g. {report['missing'][:5]}."
        )
    return report


def rebuild_backbone(backbone, method=DEFAULT_METHOD, **config_overrides):
    """A new backbone with changed config fields and the weights moved over.

    Typical uses: ``rebuild_backbone(b, image_size=(384, 384))`` for
    fine-tuning at 384 px; ``rebuild_backbone(b, num_modality_types=3)`` for
    NLVR2 (row 2 = copy of row 1).

    Args:
        backbone: source ``VLBEiTBackbone``.
        method: relative-table interpolation method.
        **config_overrides: backbone config fields to change (``image_size``,
            ``num_modality_types``, ``max_text_length``, ``drop_path_rate``,
            ``dtype``).

    Returns:
        a new ``VLBEiTBackbone``.
    """
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    config = backbone.get_config()
    config.update(config_overrides)
    config.pop("name", None)
    target = VLBEiTBackbone.from_config(config)
    load_backbone_weights_resized(backbone, target, method=method)
    return target


def grid_offsets_count(grid):
    """M = (2Hp - 1)(2Wp - 1) for a patch grid."""
    return (2 * int(grid[0]) - 1) * (2 * int(grid[1]) - 1)


__all__ = [
    "RESIZE_METHODS",
    "beit_geometric_offsets",
    "beit_geometric_ratio",
    "grid_offsets_count",
    "load_backbone_weights_resized",
    "rebuild_backbone",
    "resize_absolute_position_embeddings",
    "resize_relative_offset_grid",
    "resize_relative_position_bias_table",
]
