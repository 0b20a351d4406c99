"""Random VLMo state dicts with the official key names and shapes.

Built from ``vlmo_base_keys.json`` (shapes only, written from the official
``VLMo(config)`` constructor): the pretraining layout lists its full state
dict; each fine-tuning layout is the pretraining backbone with the differing
tables replaced and its own heads.
"""

import json

import numpy as np

HEAD_PREFIXES = ("mlm_score.", "itm_score.", "itc_", "logit_scale", "logit_vl_scale",
                 "vqa_classifier.", "nlvr2_classifier.")
# Official -> shrunk dimension sizes by model_arch. Base: d 768 -> 24 keeps 12 heads
# of width 2; Large: d 1024 -> 32 keeps 16 heads of width 2 (3d = 3072 -> 96 in
# both). The relative table keeps its shape, so grid, L0 and heads stay official.
SHRINK = {
    "vlmo_base_patch16": {768: 24, 1536: 48, 2304: 72, 3072: 96, 30522: 50, 3129: 7},
    "vlmo_large_patch16": {1024: 32, 2048: 64, 3072: 96, 4096: 128, 30522: 50, 3129: 7},
}


def layout_shapes(keys_json, layout, shrink=False):
    """key -> (shape, dtype name) of one layout (optionally with SHRINK applied)."""
    with open(keys_json) as f:
        data = json.load(f)
    layouts = data["layouts"]
    shrink_map = SHRINK[data["model_arch"]] if shrink else {}
    pretrain = layouts["pretrain_mlm_itm_itc"]["state_dict_shapes"]
    if layout == "pretrain_mlm_itm_itc":
        shapes = dict(pretrain)
    else:
        entry = layouts[layout]
        shapes = {k: v for k, v in pretrain.items() if not k.startswith(HEAD_PREFIXES)}
        for key, change in entry["backbone_keys_differing_from_pretrain"].items():
            shapes[key] = change["this_layout"]
        for key in entry["backbone_keys_missing_vs_pretrain"]:
            shapes.pop(key)
        shapes.update(entry["head_keys_shapes"])
    buffers = layouts[layout]["buffers_in_state_dict"]
    out = {}
    for key, shape in shapes.items():
        shape = [shrink_map.get(s, s) for s in shape]
        dtype = buffers[key]["dtype"] if key in buffers else "float32"
        out[key] = (tuple(shape), dtype)
    return out


def random_state_dict(keys_json, layout, shrink=False, seed=0):
    """A random state dict of ``layout`` (float32 weights, int64 arange buffers)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, (shape, dtype) in layout_shapes(keys_json, layout, shrink).items():
        if dtype == "int64":
            state[key] = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        else:
            state[key] = np.asarray(rng.standard_normal(shape, dtype=np.float32) * 0.02, np.float32)
    return state
