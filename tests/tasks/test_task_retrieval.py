"""Retrieval: ITC/ITM losses, hard-negative sampling, re-ranking evaluation."""

import math

import keras
import numpy as np
import pytest

from vlbeit_keras.tasks import retrieval


def _model(backbone, **kwargs):
    return retrieval.VLBEiTRetrieval(backbone, seed=3, **kwargs)


def test_hard_negatives_never_pick_a_positive(tiny_backbone, to_numpy):
    model = _model(tiny_backbone)
    rng = np.random.default_rng(0)
    # Strongly favour the positives: a wrong sampler would pick them.
    logits = rng.normal(size=(6, 6)).astype("float32") + 50 * np.eye(6, dtype="float32")
    ids = np.array([0, 0, 1, 2, 2, 2], "int32")  # captions sharing an image are positives too
    for image_ids in (None, ids):
        positives = to_numpy(model.positive_mask(6, image_ids))
        for _ in range(100):
            t_idx, t_ok, i_idx, i_ok = (to_numpy(a) for a in model.sample_hard_negatives(logits, positives))
            assert t_ok.all() and i_ok.all()
            assert not positives[np.arange(6), t_idx].any()
            assert not positives.T[np.arange(6), i_idx].any()


def test_hard_negatives_follow_the_itc_softmax(tiny_backbone, to_numpy):
    model = _model(tiny_backbone)
    logits = np.zeros((3, 3), "float32")
    logits[0, 2] = 3.0  # image 0: text 2 far more similar than text 1
    positives = to_numpy(model.positive_mask(3))
    draws = np.array([to_numpy(model.sample_hard_negatives(logits, positives)[0])[0] for _ in range(200)])
    share = np.mean(draws == 2)
    expected = math.exp(3) / (math.exp(3) + 1)  # softmax over {1, 2} with the diagonal removed
    assert abs(share - expected) < 0.08


def test_single_pair_batch_marks_its_negative_invalid(tiny_backbone, to_numpy):
    model = _model(tiny_backbone)
    out = model.sample_hard_negatives(np.zeros((1, 1), "float32"), to_numpy(model.positive_mask(1)))
    assert not to_numpy(out[1])[0] and not to_numpy(out[3])[0]


def test_logit_scale_and_projections(tiny_backbone):
    model = _model(tiny_backbone)
    assert float(keras.ops.convert_to_numpy(model.logit_scale)) == pytest.approx(math.log(1 / 0.07))
    assert model.itc_image_proj.use_bias is False and model.itc_text_proj.use_bias is False
    assert model.itm_score.kernel.shape == (32, 2)


def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_loss_is_symmetric_itc_plus_weighted_itm(tiny_backbone, rng, pair_inputs, to_numpy):
    model = _model(tiny_backbone)
    x = pair_inputs(rng, 4)
    x["image_ids"] = np.array([0, 1, 1, 2], "int32")
    y_pred = model(x, training=False)
    loss = float(to_numpy(model.compute_loss(x=x, y_pred=y_pred)))
    out = to_numpy(y_pred)
    logits = out["logits_per_image"]
    emb_i, emb_t = out["image_embeddings"], out["text_embeddings"]
    np.testing.assert_allclose(np.linalg.norm(emb_i, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(logits, (1 / 0.07) * emb_i @ emb_t.T, rtol=1e-4, atol=1e-4)
    same = (x["image_ids"][:, None] == x["image_ids"][None, :]).astype(np.float64)
    targets = same / same.sum(1, keepdims=True)
    i2t = -(targets * _log_softmax(logits, 1)).sum(1).mean()
    t2i = -(targets.T * _log_softmax(logits.T, 1)).sum(1).mean()
    labels = np.array([1] * 4 + [0] * 8)
    per = -_log_softmax(out["itm_logits"], 1)[np.arange(12), labels]
    w = out["itm_weights"]
    assert w[:4].tolist() == [1, 1, 1, 1]
    expected = (i2t + t2i) / 2 + (per * w).sum() / w.sum()
    assert loss == pytest.approx(expected, rel=1e-4)
    # ITM rows: the B positives first, as the fused matching head scores them.
    positive = to_numpy(model.itm_logits(x["token_ids"], x["padding_mask"], x["images"]))
    np.testing.assert_allclose(out["itm_logits"][:4], positive, atol=1e-5)
    assert out["itm_logits"].shape == (12, 2)


def test_itc_only_model_has_no_itm_head(tiny_backbone, rng, pair_inputs):
    model = _model(tiny_backbone, use_itm=False)
    out = model(pair_inputs(rng, 2))
    assert set(out) == {"image_embeddings", "text_embeddings", "logits_per_image"}
    assert not any("itm_score" in v.path for v in model.weights)


def test_rerank_places_fused_scores_first_and_keeps_the_rest_in_order():
    sim = np.array([[0.9, 0.8, 0.1, 0.5]])
    out = retrieval.rerank(sim, np.array([-5.0, 2.0]), np.array([0, 0]), np.array([0, 1]))
    assert np.argsort(-out[0], kind="stable").tolist() == [1, 0, 3, 2]
    assert out[0, 1] == pytest.approx(2.8)


def test_evaluate_matches_metric_on_the_model_scores(tiny_backbone, tokenizer, image_config,
                                                     to_numpy):
    from vlbeit_keras.data.pipeline import TextPacker
    from vlbeit_keras.data.image_preprocessing import preprocess_decoded_image
    from vlbeit_keras.metrics.retrieval import retrieval_recall

    records, config = retrieval.example(10, (32, 32), seed=4)
    model = _model(tiny_backbone)
    io = {"tokenizer": tokenizer, "image_config": image_config, "batch_size": 4}
    metrics, predictions = retrieval.evaluate(model, records, rerank_k=0, **io)
    # Independent recomputation of the dual-encoder scores, eagerly.
    ids = [r["image_id"] for r in records]
    gallery = list(dict.fromkeys(ids))
    first = [ids.index(i) for i in gallery]
    images = np.stack([np.asarray(preprocess_decoded_image(records[i]["image"], image_config))
                       for i in first])
    token_ids, mask = TextPacker(tokenizer, 8)(np.array([r["text"] for r in records]))
    emb_i = to_numpy(model.image_embeddings(images))
    emb_t = to_numpy(model.text_embeddings(np.asarray(token_ids), np.asarray(mask)))
    expected = retrieval_recall(emb_i @ emb_t.T, gallery, ids)
    for key in ("tr_r1", "tr_r5", "ir_r1", "ir_r5"):
        assert metrics[key] == pytest.approx(expected[key]) == pytest.approx(metrics["itc_" + key])
    assert metrics["num_images"] == len(gallery) and metrics["num_texts"] == 10
    assert predictions["image_ids"] == gallery
    reranked, _ = retrieval.evaluate(model, records, rerank_k=2, **io)
    assert reranked["itc_tr_r1"] == pytest.approx(metrics["itc_tr_r1"])
    # With k = 2 only the top 2 are re-ordered: R@K for K >= 2 is unchanged.
    for key in ("tr_r5", "tr_r10", "ir_r5", "ir_r10"):
        assert reranked[key] == pytest.approx(metrics[key])


@pytest.mark.parametrize("rerank_score", ["log_odds", "positive_logit"])
def test_full_rerank_score_is_itm_plus_dual_encoder(tiny_backbone, tokenizer, image_config,
                                                     to_numpy, rerank_score):
    """Re-ranking the whole gallery ranks by ITM log-odds + ITC logit
    (default) or by ALBEF's ITM positive logit + cosine."""
    from vlbeit_keras.metrics.retrieval import retrieval_recall

    records, _ = retrieval.example(6, (32, 32), seed=5)
    model = _model(tiny_backbone)
    io = {"tokenizer": tokenizer, "image_config": image_config, "batch_size": 4}
    ids = [r["image_id"] for r in records]
    gallery = list(dict.fromkeys(ids))
    metrics, _ = retrieval.evaluate(model, records, rerank_k=len(records),
                                    rerank_score=rerank_score, **io)
    fns = retrieval.encoder_functions(model)
    from vlbeit_keras.data.image_preprocessing import preprocess_decoded_image
    from vlbeit_keras.data.pipeline import TextPacker

    images = np.stack([np.asarray(preprocess_decoded_image(records[ids.index(g)]["image"],
                                                           image_config)) for g in gallery])
    token_ids, mask = (np.asarray(a) for a in TextPacker(tokenizer, 8)(
        np.array([r["text"] for r in records])))
    sim = to_numpy(model.image_embeddings(images)) @ to_numpy(
        model.text_embeddings(token_ids, mask)).T
    n_i, n_t = sim.shape
    logits = to_numpy(model.itm_logits(np.repeat(token_ids, n_i, 0), np.repeat(mask, n_i, 0),
                                       np.tile(images, (n_t, 1, 1, 1)))).reshape(n_t, n_i, 2)
    if rerank_score == "log_odds":
        scale = float(np.exp(to_numpy(model.logit_scale)))
        fused = (logits[..., 1] - logits[..., 0]).T + scale * sim
    else:
        fused = logits[..., 1].T + sim
    expected = retrieval_recall(fused, gallery, ids)
    for key in ("tr_r1", "ir_r1", "tr_r5", "ir_r5"):
        assert metrics[key] == pytest.approx(expected[key]), key
    with pytest.raises(ValueError, match="rerank_score"):
        retrieval.evaluate(model, records, rerank_k=2, rerank_score="sum", **io)


def test_training_batches_carry_dense_image_ids(io):
    records, _ = retrieval.example(8, (32, 32), seed=2)
    x = next(iter(retrieval.make_dataset(records, batch_size=8, training=False, **io)))
    dense = retrieval.dense_image_ids([r["image_id"] for r in records])
    assert np.asarray(x["image_ids"]).tolist() == dense.tolist()
    assert set(x) == {"token_ids", "padding_mask", "images", "image_ids", "text_ids", "caption_ids"}
    text_ids, caption_ids = retrieval.text_ids_and_captions(
        [r["text"] for r in records], [r["image_id"] for r in records])
    assert np.asarray(x["text_ids"]).tolist() == text_ids.tolist()
    assert np.asarray(x["caption_ids"]).tolist() == caption_ids.tolist()


def test_caption_ids_group_duplicate_texts_per_image():
    texts = ["One circle", "a red circle", "one  circle", "two squares", "a blue circle"]
    images = ["a", "a", "b", "c", "b"]
    text_ids, caption_ids = retrieval.text_ids_and_captions(texts, images)
    assert text_ids.tolist() == [0, 1, 0, 2, 3]  # case and spacing do not make a new caption
    assert caption_ids.tolist() == [[0, 1], [0, 1], [0, 3], [2, -1], [0, 3]]


def test_a_duplicate_caption_of_another_image_is_a_positive_not_a_negative(tiny_backbone, to_numpy):
    # Image b is described by "one circle" too: text 0 (a caption of image a)
    # must be neither a contrastive negative nor a drawn ITM negative of image b.
    model = _model(tiny_backbone)
    texts = ["one circle", "a red circle", "one circle", "two squares"]
    images = ["a", "a", "b", "c"]
    text_ids, caption_ids = retrieval.text_ids_and_captions(texts, images)
    image_ids = retrieval.dense_image_ids(images)
    plain = to_numpy(model.positive_mask(4, image_ids))
    positives = to_numpy(model.positive_mask(4, image_ids, text_ids, caption_ids))
    assert not plain[2, 0] and positives[2, 0] and positives[0, 2]  # same string, both images
    assert not positives[2, 1] and not positives[3, 0] and not positives[0, 3]
    np.testing.assert_array_equal(positives | plain, positives)  # only adds positives
    logits = np.full((4, 4), -5.0, "float32")
    logits[2, 0] = logits[0, 2] = 20.0  # the ITC would pick the duplicate every time
    for _ in range(50):
        t_idx, t_ok, i_idx, i_ok = (to_numpy(a) for a in model.sample_hard_negatives(logits, positives))
        assert not positives[np.arange(4), t_idx][t_ok].any()
        assert not positives.T[np.arange(4), i_idx][i_ok].any()
