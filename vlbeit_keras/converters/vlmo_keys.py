"""VLMo state-dict names, layouts and architecture inference.

The VLMo checkpoint layout (MODEL_SPEC §12; ``microsoft/unilm`` ``vlmo/vlmo/modules/
{vlmo_module,multiway_transformer,heads}.py``) and its mapping onto
vlbeit_keras variables. Everything here is NumPy and plain Python; the models
are built in :mod:`vlbeit_keras.converters.vlmo`.

Layouts: PyTorch Linear ``[out, in]`` -> Dense kernel ``[in, out]``
(``"linear"``); Conv2d ``[out, in, kh, kw]`` -> Conv2D kernel
``[kh, kw, in, out]`` (``"conv"``); ``transformer.cls_token`` ``[1, 1, d]``
-> ``(d,)`` (``"cls"``); ``transformer.pos_embed`` ``[1, N + 1, d]`` ->
``(N + 1, d)`` (``"pos"``); everything else is copied.
"""

import math
import re

import numpy as np

from vlbeit_keras.converters.state_dict_io import CheckpointError

# Index buffers are rebuilt at construction, never loaded (MODEL_SPEC §4.2:
# some VLMo checkpoints carry stale ones).
IGNORED_KEY_PATTERNS = (
    r"(^|\.)relative_position_index$",
    r"(^|\.)text_relative_position_index$",
    r"(^|\.)text_imag_relative_position_index$",
    r"^text_embeddings\.position_ids$",
)

# VLMo keys that no vlbeit_keras model holds: kept verbatim in the extras
# file so that export reproduces the checkpoint. Key -> reason.
UNUSED_KEY_REASONS = {
    r"^itc_vl_(text|image)_proj\.fc\.weight$": (
        "ITC projection of the VL-FFN features (VLMo cls_vlffn_feats); the retrieval "
        "task has no VL-FFN contrastive branch"
    ),
    r"^logit_vl_scale$": "temperature of the VL-FFN contrastive branch (see itc_vl_*)",
    r"^text_embeddings\.position_embeddings\.weight$": (
        "absolute text positions; VLMo never uses them with relative position bias "
        "(position_embedding_type 'rel_pos')"
    ),
}

# Backbone: per-block keys (VLMo suffix, our suffix, transform).
_ATTENTION_KEYS = (
    ("norm1.weight", "norm1/gamma", None),
    ("norm1.bias", "norm1/beta", None),
    ("attn.q_bias", "attn/q_bias", None),
    ("attn.v_bias", "attn/v_bias", None),
    ("attn.qkv.weight", "attn/qkv/kernel", "linear"),
    ("attn.proj.weight", "attn/proj/kernel", "linear"),
    ("attn.proj.bias", "attn/proj/bias", None),
)
_LAYERSCALE_KEYS = (("gamma_1", "gamma_1", None), ("gamma_2", "gamma_2", None))
# VLMo expert suffix -> our expert name (``mlp_<name>``; ``norm2_<vlmo>`` -> ``mlp_<ours>/norm``).
EXPERTS = (("text", "text"), ("imag", "imag"), ("vl", "vl"))

RELATIVE_TABLE_PATH = "transformer/relative_position_bias/relative_position_bias_table"
DEFAULT_RELATIVE_TEXT_LENGTH = 196  # VLMo max_text_len_of_initckpt in every released config
DEFAULT_MAX_TEXT_LENGTH = 40  # VLMo max_text_len


def backbone_key_map(config):
    """VLMo key -> (vlbeit_keras variable path, transform) for a backbone config.

    Args:
        config: backbone config dict (``num_layers``, ``num_vl_layers``,
            ``position_mode``, ``layerscale_init``).

    Returns:
        dict, ordered as VLMo's state dict.
    """
    relative = config["position_mode"] == "relative"
    m = {}
    if relative:
        m["relative_position_bias_table"] = (RELATIVE_TABLE_PATH, None)
    m["transformer.cls_token"] = ("patch_embed/cls_token", "cls")
    if not relative:
        m["transformer.pos_embed"] = ("patch_embed/pos_embed", "pos")
    m["transformer.patch_embed.proj.weight"] = ("patch_embed/proj/kernel", "conv")
    m["transformer.patch_embed.proj.bias"] = ("patch_embed/proj/bias", None)
    num_layers, num_vl = config["num_layers"], config["num_vl_layers"]
    block_keys = _ATTENTION_KEYS
    if config.get("layerscale_init") is not None:
        block_keys = _LAYERSCALE_KEYS + _ATTENTION_KEYS
    for i in range(num_layers):
        src, dst = f"transformer.blocks.{i}.", f"transformer/blocks_{i}/"
        for a, b, t in block_keys:
            m[src + a] = (dst + b, t)
        experts = EXPERTS if i >= num_layers - num_vl else EXPERTS[:2]
        for vlmo_name, ours in experts:
            for p, q in (("weight", "gamma"), ("bias", "beta")):
                m[f"{src}norm2_{vlmo_name}.{p}"] = (f"{dst}mlp_{ours}/norm/{q}", None)
            for fc in ("fc1", "fc2"):
                m[f"{src}mlp_{vlmo_name}.{fc}.weight"] = (f"{dst}mlp_{ours}/{fc}/kernel", "linear")
                m[f"{src}mlp_{vlmo_name}.{fc}.bias"] = (f"{dst}mlp_{ours}/{fc}/bias", None)
    m["transformer.norm.weight"] = ("transformer/norm/gamma", None)
    m["transformer.norm.bias"] = ("transformer/norm/beta", None)
    m["text_embeddings.word_embeddings.weight"] = ("text_embeddings/word_embeddings/embeddings", None)
    if not relative:
        m["text_embeddings.position_embeddings.weight"] = (
            "text_embeddings/position_embeddings/embeddings", None)
    m["text_embeddings.token_type_embeddings.weight"] = (
        "text_embeddings/token_type_embeddings/embeddings", None)
    m["text_embeddings.LayerNorm.weight"] = ("text_embeddings/LayerNorm/gamma", None)
    m["text_embeddings.LayerNorm.bias"] = ("text_embeddings/LayerNorm/beta", None)
    m["token_type_embeddings.weight"] = ("modality_type_embeddings/embeddings", None)
    m["pooler.dense.weight"] = ("pooler/kernel", "linear")
    m["pooler.dense.bias"] = ("pooler/bias", None)
    return m


# Heads: task name -> {VLMo key: (attribute path on the task model, transform)}.
# Optional keys (absent -> the head is built without that part) are listed in
# HEAD_OPTIONAL_KEYS.
def _mlp_classifier(prefix):
    return {
        f"{prefix}.0.weight": ("classifier.fc1.kernel", "linear"),
        f"{prefix}.0.bias": ("classifier.fc1.bias", None),
        f"{prefix}.1.weight": ("classifier.norm.gamma", None),
        f"{prefix}.1.bias": ("classifier.norm.beta", None),
        f"{prefix}.3.weight": ("classifier.fc2.kernel", "linear"),
        f"{prefix}.3.bias": ("classifier.fc2.bias", None),
    }


HEAD_KEY_MAPS = {
    # VLBEiTPretrainer: keras-hub MaskedLMHead shared by MLM / MVLM (VLMo MLMHead).
    "pretraining": {
        "mlm_score.transform.dense.weight": ("mlm_head._intermediate_dense.kernel", "linear"),
        "mlm_score.transform.dense.bias": ("mlm_head._intermediate_dense.bias", None),
        "mlm_score.transform.LayerNorm.weight": ("mlm_head._intermediate_layer_norm.gamma", None),
        "mlm_score.transform.LayerNorm.bias": ("mlm_head._intermediate_layer_norm.beta", None),
        "mlm_score.decoder.weight": ("mlm_head._kernel", "linear"),
        "mlm_score.bias": ("mlm_head._bias", None),
    },
    # VLBEiTRetrieval: ITC projections + temperature, ITM head.
    "retrieval": {
        "itc_text_proj.fc.weight": ("itc_text_proj.kernel", "linear"),
        "itc_image_proj.fc.weight": ("itc_image_proj.kernel", "linear"),
        "logit_scale": ("logit_scale", None),
        "itm_score.fc.weight": ("itm_score.kernel", "linear"),
        "itm_score.fc.bias": ("itm_score.bias", None),
    },
    "vqa": _mlp_classifier("vqa_classifier"),
    "nlvr2": _mlp_classifier("nlvr2_classifier"),
}
HEAD_OPTIONAL_KEYS = {"retrieval": ("itm_score.fc.weight", "itm_score.fc.bias")}
TASK_NAMES = tuple(HEAD_KEY_MAPS)


def head_keys_present(state_dict):
    """Task name -> sorted list of that task's head keys in ``state_dict``."""
    return {
        task: sorted(k for k in keys if k in state_dict)
        for task, keys in HEAD_KEY_MAPS.items()
        if any(k in state_dict for k in keys)
    }


def is_ignored(key):
    """True for index buffers that are rebuilt, never loaded."""
    return any(re.search(p, key) for p in IGNORED_KEY_PATTERNS)


def unused_reason(key):
    """Why a known VLMo key has no place in vlbeit_keras models (or None)."""
    for pattern, reason in UNUSED_KEY_REASONS.items():
        if re.search(pattern, key):
            return reason
    return None


# ---------------------------------------------------------------------------
# Layout transforms
def to_keras(value, kind):
    """VLMo (PyTorch) layout -> Keras layout."""
    value = np.asarray(value)
    if kind == "linear":
        return value.T
    if kind == "conv":
        return np.transpose(value, (2, 3, 1, 0))
    if kind == "cls":
        return value.reshape(-1)
    if kind == "pos":
        return value.reshape(value.shape[-2], value.shape[-1])
    return value


def to_vlmo(value, kind):
    """Keras layout -> VLMo (PyTorch) layout (inverse of :func:`to_keras`)."""
    value = np.asarray(value)
    if kind == "linear":
        return value.T  # a view; writers make it contiguous
    if kind == "conv":
        return np.transpose(value, (3, 2, 0, 1))
    if kind == "cls":
        return value.reshape(1, 1, -1)
    if kind == "pos":
        return value.reshape(1, *value.shape)
    return value


def keras_shape(shape, kind):
    """Shape after :func:`to_keras` (for error messages before converting)."""
    shape = tuple(shape)
    if kind == "linear" and len(shape) == 2:
        return shape[::-1]
    if kind == "conv" and len(shape) == 4:
        return (shape[2], shape[3], shape[1], shape[0])
    if kind == "cls":
        return (int(np.prod(shape)),)
    if kind == "pos" and len(shape) >= 2:
        return shape[-2:]
    return shape


# ---------------------------------------------------------------------------
# Architecture inference
def _require(state_dict, key, source, why):
    if key not in state_dict:
        raise CheckpointError(f"{source}: key {key!r} is missing; it is needed to infer {why}.")
    return np.shape(state_dict[key])


def relative_table_rows(grid, relative_text_length):
    """R = (2Hp-1)(2Wp-1) + 2 L0 + 5 rows of the VLMo relative table."""
    return (2 * grid[0] - 1) * (2 * grid[1] - 1) + 2 * relative_text_length + 5


def infer_source_config(state_dict, source="checkpoint", image_size_hint=None,
                        relative_text_length_hint=None, num_heads_hint=None,
                        candidate_image_size=None):
    """The backbone configuration a VLMo state dict was trained with.

    Read from key names and shapes (never from index buffers):

    - ``num_layers``: blocks ``transformer.blocks.N``; ``num_vl_layers``:
      blocks with ``mlp_vl`` (must be the top ones);
    - ``hidden_dim``: ``transformer.cls_token``; ``intermediate_dim``:
      ``mlp_text.fc1``; ``patch_size``: the patch-embedding kernel (square);
    - ``vocabulary_size``: ``text_embeddings.word_embeddings``;
      ``num_modality_types``: rows of ``token_type_embeddings`` (3 in NLVR2);
    - ``position_mode``: ``"relative"`` with ``relative_position_bias_table``
      (columns = heads x layers gives ``num_heads``), ``"absolute"`` with
      ``transformer.pos_embed`` (rows = N + 1);
    - patch grid and L0 from the table rows R = (2Hp-1)(2Wp-1) + 2 L0 + 5:
      with ``image_size_hint`` (the user's ``--source-image-size``) its grid
      and the L0 that fits; otherwise L0 = ``relative_text_length_hint`` or
      196 (every VLMo config) and the grid of ``candidate_image_size`` (the
      conversion target) if it fits exactly, else the square grid that fits;
      absolute mode: the same order on N = rows of ``pos_embed`` - 1;
    - ``max_text_length``: ``text_embeddings.position_ids`` or the text
      position table rows (VLMo ``max_text_len``), else 40;
    - ``layerscale_init``: 0.1 when ``gamma_1`` exists, else None.

    Args:
        state_dict: dict key -> array (VLMo names).
        source: file name for messages.
        image_size_hint: (H, W) pixels of the checkpoint, or None.
        candidate_image_size: (H, W) the conversion target, tried before a
            square grid (non-square fine-tuning grids), or None.
        relative_text_length_hint: L0, or None.
        num_heads_hint: heads for absolute-position checkpoints (no table
            to read them from).

    Returns:
        dict of :class:`~vlbeit_keras.VLBEiTBackbone` config fields.

    Raises:
        CheckpointError: a required key is missing or shapes contradict
            each other; the message names the keys and what to pass.
    """
    blocks = {}
    for key in state_dict:
        match = re.match(r"^transformer\.blocks\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(key[match.end():])
    if not blocks:
        raise CheckpointError(
            f"{source}: no 'transformer.blocks.N.*' keys; this is not a VLMo state dict "
            f"(first keys: {sorted(state_dict)[:5]})."
        )
    num_layers = max(blocks) + 1
    absent = [i for i in range(num_layers) if i not in blocks]
    if absent:
        raise CheckpointError(
            f"{source}: blocks {absent} have no keys although block {num_layers - 1} exists "
            "(truncated checkpoint?)."
        )
    vl_blocks = [i for i in range(num_layers) if any(k.startswith("mlp_vl.") for k in blocks[i])]
    num_vl_layers = len(vl_blocks)
    if vl_blocks and vl_blocks != list(range(num_layers - num_vl_layers, num_layers)):
        raise CheckpointError(
            f"{source}: VL-FFN keys (mlp_vl) in blocks {vl_blocks}; they must be the top "
            "blocks (VLMo vlffn_start_layer_index)."
        )
    cls_shape = _require(state_dict, "transformer.cls_token", source, "the width")
    hidden_dim = int(cls_shape[-1])
    fc1 = _require(state_dict, "transformer.blocks.0.mlp_text.fc1.weight", source, "the FFN width")
    intermediate_dim = int(fc1[0])
    kernel = _require(state_dict, "transformer.patch_embed.proj.weight", source, "the patch size")
    if len(kernel) != 4 or kernel[2] != kernel[3]:
        raise CheckpointError(
            f"{source}: 'transformer.patch_embed.proj.weight' has shape {tuple(kernel)}; "
            "expected [d, 3, p, p] (square patches)."
        )
    patch_size = int(kernel[2])
    words = _require(state_dict, "text_embeddings.word_embeddings.weight", source, "the vocabulary")
    modality = _require(state_dict, "token_type_embeddings.weight", source, "the modality rows")
    has_table = "relative_position_bias_table" in state_dict
    has_pos = "transformer.pos_embed" in state_dict
    if has_table and has_pos:
        raise CheckpointError(
            f"{source}: holds both 'relative_position_bias_table' and 'transformer.pos_embed'; "
            "VLMo uses one or the other."
        )
    if not (has_table or has_pos):
        raise CheckpointError(
            f"{source}: neither 'relative_position_bias_table' (VLMo Base/Large) nor "
            "'transformer.pos_embed' (Base+) is present (truncated checkpoint?)."
        )
    config = {
        "vocabulary_size": int(words[0]),
        "num_layers": num_layers,
        "hidden_dim": hidden_dim,
        "intermediate_dim": intermediate_dim,
        "num_vl_layers": num_vl_layers,
        "patch_size": patch_size,
        "num_modality_types": int(modality[0]),
        "layerscale_init": 0.1 if "gamma_1" in blocks[0] else None,
    }
    if has_table:
        rows, cols = np.shape(state_dict["relative_position_bias_table"])
        if cols % num_layers:
            raise CheckpointError(
                f"{source}: 'relative_position_bias_table' has {cols} columns, not a multiple "
                f"of the {num_layers} layers (heads x layers)."
            )
        grid, l0 = _infer_grid(rows, patch_size, source, image_size_hint, relative_text_length_hint,
                               candidate_image_size)
        config.update(position_mode="relative", num_heads=cols // num_layers,
                      relative_text_length=l0)
    else:
        n = int(np.shape(state_dict["transformer.pos_embed"])[-2]) - 1
        grid = _square_grid_from_patches(n, patch_size, source, image_size_hint, candidate_image_size)
        if num_heads_hint is None:
            raise CheckpointError(
                f"{source}: an absolute-position (Base+) checkpoint does not tell the number "
                "of attention heads; pass --set num_heads=N (VLMo Base+: 16) or --preset."
            )
        config.update(position_mode="absolute", num_heads=int(num_heads_hint),
                      relative_text_length=DEFAULT_RELATIVE_TEXT_LENGTH)
    config["image_size"] = [grid[0] * patch_size, grid[1] * patch_size]
    if "text_embeddings.position_ids" in state_dict:
        text_length = int(np.shape(state_dict["text_embeddings.position_ids"])[-1])
    elif "text_embeddings.position_embeddings.weight" in state_dict:
        text_length = int(np.shape(state_dict["text_embeddings.position_embeddings.weight"])[0])
    else:
        text_length = DEFAULT_MAX_TEXT_LENGTH
    if config["position_mode"] == "relative":
        text_length = min(text_length, config["relative_text_length"])
    config["max_text_length"] = text_length
    if hidden_dim % config["num_heads"]:
        raise CheckpointError(
            f"{source}: {config['num_heads']} heads do not divide the width {hidden_dim}."
        )
    return config


def _infer_grid(rows, patch_size, source, image_size_hint, l0_hint, candidate_image_size=None):
    if image_size_hint is not None:  # the user said so: any L0 that fits
        grid = _grid(image_size_hint, patch_size)
        rest = rows - (2 * grid[0] - 1) * (2 * grid[1] - 1) - 5
        if rest >= 4 and rest % 2 == 0 and (l0_hint is None or rest // 2 == l0_hint):
            return grid, rest // 2
        raise CheckpointError(
            f"{source}: 'relative_position_bias_table' has {rows} rows, which does not fit "
            f"the given checkpoint image size {tuple(image_size_hint)} (grid {grid})"
            + (f" with L0 = {l0_hint}" if l0_hint is not None else "")
            + " (rows = (2Hp-1)(2Wp-1) + 2 L0 + 5)."
        )
    l0 = DEFAULT_RELATIVE_TEXT_LENGTH if l0_hint is None else int(l0_hint)
    m = rows - 2 * l0 - 5
    if candidate_image_size is not None:  # the target size, if the table fits it exactly
        grid = _grid(candidate_image_size, patch_size)
        if (2 * grid[0] - 1) * (2 * grid[1] - 1) == m:
            return grid, l0
    side = math.isqrt(m) if m > 0 else 0
    if m > 0 and side * side == m and side % 2 == 1:
        h = (side + 1) // 2
        return (h, h), l0
    raise CheckpointError(
        f"{source}: 'relative_position_bias_table' has {rows} rows, which fits no square "
        f"patch grid with L0 = {l0} text positions (rows = (2Hp-1)(2Wp-1) + 2 L0 + 5). "
        "Give the checkpoint's image size with --source-image-size H,W (or its L0 with "
        "--source-relative-text-length N)."
    )


def _grid(image_size, patch_size):
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (int(h) // patch_size, int(w) // patch_size)


def _square_grid_from_patches(n, patch_size, source, image_size_hint, candidate_image_size=None):
    for hint in (image_size_hint, candidate_image_size):
        if hint is not None and np.prod(_grid(hint, patch_size)) == n:
            return _grid(hint, patch_size)
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(
            f"{source}: 'transformer.pos_embed' holds {n} patch positions, not a square grid; "
            "pass the checkpoint's image size with --source-image-size H,W."
        )
    return (side, side)


def expected_shapes(config, state_dict):
    """VLMo key -> expected PyTorch shape for a source config.

    Covers the backbone keys of ``config`` and the head keys present in
    ``state_dict`` (head widths that the config does not fix, e.g. the VQA
    answer count, are taken from the head's own output layer).

    Args:
        config: a source config from :func:`infer_source_config`.
        state_dict: the checkpoint (for head sizes).

    Returns:
        dict key -> tuple.
    """
    d, ffn, v = config["hidden_dim"], config["intermediate_dim"], config["vocabulary_size"]
    p, layers = config["patch_size"], config["num_layers"]
    grid = (config["image_size"][0] // p, config["image_size"][1] // p)
    per_key = {
        "gamma_1": (d,), "gamma_2": (d,), "norm1.weight": (d,), "norm1.bias": (d,),
        "attn.q_bias": (d,), "attn.v_bias": (d,), "attn.qkv.weight": (3 * d, d),
        "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
    }
    shapes = {}
    for key in backbone_key_map(config):
        match = re.match(r"^transformer\.blocks\.\d+\.(.*)$", key)
        if match:
            suffix = match.group(1)
            if suffix in per_key:
                shapes[key] = per_key[suffix]
            elif suffix.endswith("fc1.weight"):
                shapes[key] = (ffn, d)
            elif suffix.endswith("fc1.bias"):
                shapes[key] = (ffn,)
            elif suffix.endswith("fc2.weight"):
                shapes[key] = (d, ffn)
            else:  # fc2.bias, norm2_*.weight/bias
                shapes[key] = (d,)
    shapes.update({
        "transformer.cls_token": (1, 1, d),
        "transformer.patch_embed.proj.weight": (d, 3, p, p),
        "transformer.patch_embed.proj.bias": (d,),
        "transformer.norm.weight": (d,), "transformer.norm.bias": (d,),
        "text_embeddings.word_embeddings.weight": (v, d),
        "text_embeddings.token_type_embeddings.weight": (2, d),
        "text_embeddings.LayerNorm.weight": (d,), "text_embeddings.LayerNorm.bias": (d,),
        "token_type_embeddings.weight": (config["num_modality_types"], d),
        "pooler.dense.weight": (d, d), "pooler.dense.bias": (d,),
    })
    if config["position_mode"] == "relative":
        shapes["relative_position_bias_table"] = (
            relative_table_rows(grid, config["relative_text_length"]), config["num_heads"] * layers)
    else:
        shapes["transformer.pos_embed"] = (1, grid[0] * grid[1] + 1, d)
        shapes["text_embeddings.position_embeddings.weight"] = (config["max_text_length"], d)

    def rows(key):
        return int(np.shape(state_dict[key])[0]) if key in state_dict else None

    heads = {
        "mlm_score.transform.dense.weight": (d, d), "mlm_score.transform.dense.bias": (d,),
        "mlm_score.transform.LayerNorm.weight": (d,), "mlm_score.transform.LayerNorm.bias": (d,),
        "mlm_score.decoder.weight": (v, d), "mlm_score.bias": (v,),
        "itc_text_proj.fc.weight": (d, d), "itc_image_proj.fc.weight": (d, d),
        "itc_vl_text_proj.fc.weight": (d, d), "itc_vl_image_proj.fc.weight": (d, d),
        "logit_scale": (), "logit_vl_scale": (),
        "itm_score.fc.weight": (2, d), "itm_score.fc.bias": (2,),
    }
    for prefix, width in (("vqa_classifier", d), ("nlvr2_classifier", 2 * d)):
        hidden, out = rows(f"{prefix}.0.weight"), rows(f"{prefix}.3.weight")
        if hidden is not None:
            heads.update({f"{prefix}.0.weight": (hidden, width), f"{prefix}.0.bias": (hidden,),
                          f"{prefix}.1.weight": (hidden,), f"{prefix}.1.bias": (hidden,)})
            if out is not None:
                heads.update({f"{prefix}.3.weight": (out, hidden), f"{prefix}.3.bias": (out,)})
    shapes.update({k: s for k, s in heads.items() if k in state_dict})
    return shapes


def check_shapes(config, state_dict, source="checkpoint"):
    """Raise :class:`CheckpointError` listing every key whose shape is wrong.

    The architecture was inferred from a few keys (named in
    :func:`infer_source_config`); every other key must agree with it.
    """
    wrong = [
        f"{key!r} has shape {tuple(np.shape(state_dict[key]))}, expected {tuple(shape)}"
        for key, shape in expected_shapes(config, state_dict).items()
        if key in state_dict and tuple(np.shape(state_dict[key])) != tuple(shape)
    ]
    if wrong:
        summary = ", ".join(f"{f}={config[f]}" for f in (
            "num_layers", "hidden_dim", "num_heads", "intermediate_dim", "vocabulary_size",
            "patch_size", "image_size", "num_modality_types"))
        raise CheckpointError(
            f"{source}: {len(wrong)} key(s) do not fit the architecture ({summary}): "
            + "; ".join(wrong[:20]) + (" ..." if len(wrong) > 20 else "") + "."
        )
