"""Compare converted models with outputs of the official VLMo code.

Reference folders follow ``../shared/fixtures/vlmo_reference/config_a``
(its README): ``inputs.npz`` (``text_ids`` int (B, T), ``text_masks``
(B, T), ``image_nhwc`` float32 (B, H, W, 3) already normalised) and
``outputs.npz`` with arrays named after what the official ``VLMo.infer``,
``infer_text``, ``infer_image`` and heads return. :func:`vlmo_outputs`
computes the same names with our models, so any folder produced that way
(e.g. from a real checkpoint and your own inputs) can be checked with
``recipes/verify_vlmo_parity.py``.
"""

import math

import numpy as np

# Our computation of each official output (for docs and messages).
OUTPUT_SOURCES = {
    "vl_text_feats": "backbone(inputs)['text_sequence_output']",
    "vl_image_feats": "backbone(inputs)['image_sequence_output']",
    "vl_cls_feats": "backbone(inputs)['pooled_output']",
    "text_feats": "backbone.encode_text(ids, mask)['text_sequence_output']",
    "text_vlffn_feats": "backbone.encode_text(ids, mask, use_vl_expert=True)['text_sequence_output']",
    "image_feats": "backbone.encode_image(images)['image_sequence_output']",
    "image_vlffn_feats": "backbone.encode_image(images, use_vl_expert=True)['image_sequence_output']",
    "vl_mlm_logits": "pretrainer.mlm_head(vl_text_feats, mask_positions=all positions)",
    "vl_itm_logits": "retrieval.itm_logits(ids, mask, images)",
    "text_cls_feats": "retrieval.text_embeddings(ids, mask)",
    "image_cls_feats": "retrieval.image_embeddings(images)",
    "itc_logits_per_image": "retrieval(inputs)['logits_per_image']",
    "text_cls_vlffn_feats": "l2norm(text_vlffn_feats[:, 0] @ extras['itc_vl_text_proj.fc.weight'].T)",
    "image_cls_vlffn_feats": "l2norm(image_vlffn_feats[:, 0] @ extras['itc_vl_image_proj.fc.weight'].T)",
    "itc_vl_logits_per_image": "exp(extras['logit_vl_scale']) * image_cls_vlffn_feats @ text_cls_vlffn_feats.T",
}


def _l2_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def vlmo_outputs(conversion, text_ids, text_masks, images):
    """Our values of the official VLMo outputs (names of :data:`OUTPUT_SOURCES`).

    Head outputs appear only when their task (``pretraining``,
    ``retrieval``) or extras (``itc_vl_*``, ``logit_vl_scale``) are present.

    Args:
        conversion: a :class:`~vlbeit_keras.converters.Conversion` (e.g.
            from :func:`~vlbeit_keras.converters.load_conversion`).
        text_ids: int (B, T) token ids; T must equal the backbone's
            ``max_text_length`` for the fused outputs.
        text_masks: int (B, T), 1 = real token.
        images: float32 (B, H, W, 3), normalised as the reference inputs.

    Returns:
        dict name -> float32 ``numpy.ndarray``.
    """
    from keras import ops

    def np_(x):
        return np.asarray(ops.convert_to_numpy(x), dtype=np.float32)

    backbone, tasks, extras = conversion.backbone, conversion.tasks, conversion.extras or {}
    ids = np.asarray(text_ids, dtype=np.int32)
    mask = np.asarray(text_masks, dtype=np.int32)
    images = np.asarray(images, dtype=np.float32)
    inputs = {"token_ids": ids, "padding_mask": mask, "images": images}
    fused = backbone(inputs)
    out = {
        "vl_text_feats": fused["text_sequence_output"],
        "vl_image_feats": fused["image_sequence_output"],
        "vl_cls_feats": fused["pooled_output"],
        "text_feats": backbone.encode_text(ids, mask)["text_sequence_output"],
        "text_vlffn_feats": backbone.encode_text(ids, mask, use_vl_expert=True)["text_sequence_output"],
        "image_feats": backbone.encode_image(images)["image_sequence_output"],
        "image_vlffn_feats": backbone.encode_image(images, use_vl_expert=True)["image_sequence_output"],
    }
    if "pretraining" in tasks:
        positions = np.tile(np.arange(ids.shape[1], dtype=np.int32), (ids.shape[0], 1))
        out["vl_mlm_logits"] = tasks["pretraining"].mlm_head(
            fused["text_sequence_output"], mask_positions=positions)
    if "retrieval" in tasks:
        retrieval = tasks["retrieval"]
        if retrieval.use_itm:
            out["vl_itm_logits"] = retrieval.itm_logits(ids, mask, images)
        out["text_cls_feats"] = retrieval.text_embeddings(ids, mask)
        out["image_cls_feats"] = retrieval.image_embeddings(images)
        out["itc_logits_per_image"] = retrieval(inputs)["logits_per_image"]
    out = {k: np_(v) for k, v in out.items()}
    if {"itc_vl_text_proj.fc.weight", "itc_vl_image_proj.fc.weight"} <= set(extras):
        text = _l2_normalize(out["text_vlffn_feats"][:, 0] @ np.asarray(extras["itc_vl_text_proj.fc.weight"]).T)
        image = _l2_normalize(out["image_vlffn_feats"][:, 0] @ np.asarray(extras["itc_vl_image_proj.fc.weight"]).T)
        out["text_cls_vlffn_feats"], out["image_cls_vlffn_feats"] = text, image
        if "logit_vl_scale" in extras:
            scale = math.exp(float(np.asarray(extras["logit_vl_scale"])))
            out["itc_vl_logits_per_image"] = (scale * image @ text.T).astype(np.float32)
    return out


def compare_with_reference(conversion, reference_dir):
    """Max |ours - official| per output present in both.

    Args:
        conversion: the converted models.
        reference_dir: folder with ``inputs.npz`` and ``outputs.npz`` in the
            fixture format.

    Returns:
        dict name -> float max absolute difference (sorted by name).
    """
    import pathlib

    folder = pathlib.Path(reference_dir)
    inputs = np.load(folder / "inputs.npz")
    reference = np.load(folder / "outputs.npz")
    ours = vlmo_outputs(conversion, inputs["text_ids"], inputs["text_masks"], inputs["image_nhwc"])
    return {
        name: float(np.abs(ours[name] - reference[name]).max())
        for name in sorted(ours) if name in reference.files
    }
