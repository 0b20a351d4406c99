"""VLMo (PyTorch) state_dict <-> VLBEiTBackbone weights.

Name mapping follows MODEL_SPEC.md §12 (VLMo ``vlmo_module.py`` /
``multiway_transformer.py`` names). Linear ``[out, in]`` becomes a Dense kernel
``[in, out]``; Conv2d ``[out, in, kh, kw]`` becomes ``[kh, kw, in, out]``.
"""

import re

import numpy as np

# Keys present in VLMo checkpoints that never reach an output, or buffers that
# are rebuilt here (index tables are computed at construction, never loaded).
IGNORED_KEY_PATTERNS = (
    r"(^|\.)relative_position_index$",
    r"(^|\.)text_relative_position_index$",
    r"(^|\.)text_imag_relative_position_index$",
    r"^text_embeddings\.position_ids$",
)

_BLOCK_MAP = (
    # (VLMo suffix, our suffix, transform)
    ("gamma_1", "gamma_1", None),
    ("gamma_2", "gamma_2", None),
    ("norm1.weight", "norm1/gamma", None),
    ("norm1.bias", "norm1/beta", None),
    ("attn.q_bias", "attn/q_bias", None),
    ("attn.v_bias", "attn/v_bias", None),
    ("attn.qkv.weight", "attn/qkv/kernel", "linear"),
    ("attn.proj.weight", "attn/proj/kernel", "linear"),
    ("attn.proj.bias", "attn/proj/bias", None),
)
_EXPERTS = (("text", "text"), ("imag", "imag"), ("vl", "vl"))


def _backbone_key_map(num_layers, num_vl_layers, position_mode="relative", use_abs_text_pos=False):
    """VLMo key -> (our variable path, transform) for the backbone."""
    m = {
        "transformer.cls_token": ("patch_embed/cls_token", "cls"),
        "transformer.patch_embed.proj.weight": ("patch_embed/proj/kernel", "conv"),
        "transformer.patch_embed.proj.bias": ("patch_embed/proj/bias", None),
        "text_embeddings.word_embeddings.weight": ("text_embeddings/word_embeddings/embeddings", None),
        "text_embeddings.token_type_embeddings.weight": (
            "text_embeddings/token_type_embeddings/embeddings", None),
        "text_embeddings.LayerNorm.weight": ("text_embeddings/LayerNorm/gamma", None),
        "text_embeddings.LayerNorm.bias": ("text_embeddings/LayerNorm/beta", None),
        "token_type_embeddings.weight": ("modality_type_embeddings/embeddings", None),
        "transformer.norm.weight": ("transformer/norm/gamma", None),
        "transformer.norm.bias": ("transformer/norm/beta", None),
        "pooler.dense.weight": ("pooler/kernel", "linear"),
        "pooler.dense.bias": ("pooler/bias", None),
    }
    if position_mode == "relative":
        m["relative_position_bias_table"] = (
            "transformer/relative_position_bias/relative_position_bias_table", None)
    else:
        m["transformer.pos_embed"] = ("patch_embed/pos_embed", "pos")
    if use_abs_text_pos:
        m["text_embeddings.position_embeddings.weight"] = (
            "text_embeddings/position_embeddings/embeddings", None)
    for i in range(num_layers):
        src, dst = f"transformer.blocks.{i}.", f"transformer/blocks_{i}/"
        for a, b, t in _BLOCK_MAP:
            m[src + a] = (dst + b, t)
        experts = _EXPERTS if i >= num_layers - num_vl_layers else _EXPERTS[:2]
        for vlmo_name, ours in experts:
            for p, q in (("weight", "gamma"), ("bias", "beta")):
                m[f"{src}norm2_{vlmo_name}.{p}"] = (f"{dst}mlp_{ours}/norm/{q}", None)
            for fc in ("fc1", "fc2"):
                m[f"{src}mlp_{vlmo_name}.{fc}.weight"] = (f"{dst}mlp_{ours}/{fc}/kernel", "linear")
                m[f"{src}mlp_{vlmo_name}.{fc}.bias"] = (f"{dst}mlp_{ours}/{fc}/bias", None)
    return m


def _transform(value, kind):
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


def is_ignored(key):
    return any(re.search(p, key) for p in IGNORED_KEY_PATTERNS)


def load_vlmo_state_dict_into_backbone(backbone, state_dict, strict=True):
    """Copy VLMo-named arrays into ``backbone``'s variables.

    Args:
        backbone: a built :class:`~vlbeit_keras.VLBEiTBackbone`.
        state_dict: mapping of VLMo key -> array (NumPy or torch tensors
            converted with ``.numpy()``), PyTorch layouts.
        strict: raise if a backbone variable has no source key.

    Returns:
        list of VLMo keys that were not used (heads, unused tables).

    Raises:
        ValueError: a shape does not match (names the key and both shapes),
            or (``strict``) backbone variables are missing from the checkpoint.
    """
    key_map = _backbone_key_map(
        backbone.num_layers,
        backbone.num_vl_layers,
        backbone.position_mode,
        use_abs_text_pos=backbone.position_mode == "absolute",
    )
    variables = {v.path: v for v in backbone.weights}
    assigned, unused = set(), []
    for key, value in state_dict.items():
        if key not in key_map:
            if not is_ignored(key):
                unused.append(key)
            continue
        path, kind = key_map[key]
        value = _transform(value, kind)
        var = variables[path]
        if tuple(var.shape) != tuple(value.shape):
            raise ValueError(
                f"Checkpoint key '{key}' has shape {tuple(np.shape(state_dict[key]))} "
                f"(-> {tuple(value.shape)} after transposition) but variable "
                f"'{path}' has shape {tuple(var.shape)}."
            )
        var.assign(value.astype(var.dtype))
        assigned.add(path)
    missing = sorted(set(variables) - assigned)
    if strict and missing:
        inverse = {p: k for k, (p, _) in key_map.items()}
        raise ValueError(
            "Checkpoint lacks weights for: "
            + ", ".join(f"{p} (VLMo key '{inverse.get(p, '?')}')" for p in missing)
        )
    return unused
