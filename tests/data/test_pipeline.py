"""tf.data pipelines: pretraining batch layout, determinism, resume, task batches."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vlbeit_keras.data import demo_corpus as demo
from vlbeit_keras.data import pipeline as P
from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig


@pytest.fixture(scope="module")
def tokenizer():
    return demo.demo_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    return {
        "text": demo.demo_records("text", 40),
        "image": demo.demo_records("images", 12, image_size=40),
        "pair": demo.demo_records("captions", 10, image_size=(48, 32)),
    }


def _config(**overrides):
    values = dict(image_size=32, patch_size=8, text_length=16, pair_text_length=8,
                  text_batch_size=4, image_batch_size=3, pair_batch_size=2, seed=5)
    values.update(overrides)
    return P.PretrainingInputConfig(**values)


def _build(tokenizer, corpus, start_step=0, **overrides):
    return P.make_pretraining_dataset(
        _config(**overrides), tokenizer, text_records=corpus["text"],
        image_records=corpus["image"], pair_records=corpus["pair"], start_step=start_step,
    )


@pytest.fixture(scope="module")
def full_run(tokenizer, corpus):
    """Six batches of the reference run (built once per module)."""
    ds = _build(tokenizer, corpus)
    return ds, _take(ds, 6)


def _numpy(batch):
    return {s: {k: v.numpy() for k, v in fields.items()} for s, fields in batch.items()}


def _take(ds, n):
    return [_numpy(b) for b in ds.take(n)]


EXPECTED = {
    "text": {"token_ids": ((4, 16), "int32"), "padding_mask": ((4, 16), "int32"),
             "text_mask_positions": ((4, 3), "int32"), "text_mask_ids": ((4, 3), "int32"),
             "text_mask_weights": ((4, 3), "float32")},
    "image": {"images": ((3, 32, 32, 3), "float32"), "patch_mask": ((3, 16), "bool"),
              "image_mask_positions": ((3, 6), "int32"),
              "image_mask_weights": ((3, 6), "float32")},
    "image_text": {"token_ids": ((2, 8), "int32"), "padding_mask": ((2, 8), "int32"),
                   "text_mask_positions": ((2, 4), "int32"), "text_mask_ids": ((2, 4), "int32"),
                   "text_mask_weights": ((2, 4), "float32"),
                   "images": ((2, 32, 32, 3), "float32"), "patch_mask": ((2, 16), "bool"),
                   "image_mask_positions": ((2, 6), "int32"),
                   "image_mask_weights": ((2, 6), "float32")},
}


def test_pretraining_batch_layout(full_run):
    ds, batches = full_run
    spec = {s: {k: (tuple(v.shape), v.dtype.name) for k, v in f.items()}
            for s, f in ds.element_spec.items()}
    assert spec == EXPECTED
    batch = batches[0]
    for stream, fields in EXPECTED.items():
        for key, (shape, dtype) in fields.items():
            assert batch[stream][key].shape == shape and batch[stream][key].dtype == dtype


def _check_text(fields, special, corpus_ids):
    ids, pad = fields["token_ids"], fields["padding_mask"]
    pos, tgt, w = fields["text_mask_positions"], fields["text_mask_ids"], fields["text_mask_weights"]
    for i in range(len(ids)):
        k = int(w[i].sum())
        assert np.all(w[i, :k] == 1) and np.all(w[i, k:] == 0)
        original = ids[i].copy()
        original[pos[i, :k]] = tgt[i, :k]
        real = int(pad[i].sum())
        assert original[0] == special["cls"] and original[real - 1] == special["sep"]
        assert np.all(original[real:] == special["pad"]) and np.all(pad[i, :real] == 1)
        assert special["mask"] not in original
        assert np.all(pos[i, :k] > 0) and np.all(pos[i, :k] < real - 1)  # no specials
        words = tuple(original[1:real - 1].tolist())  # truncated texts: a prefix
        assert any(c[:len(words)] == words for c in corpus_ids)


def _check_image(fields):
    mask, pos, w = fields["patch_mask"], fields["image_mask_positions"], fields["image_mask_weights"]
    for i in range(len(mask)):
        k = int(mask[i].sum())
        assert 0 < k <= pos.shape[1]
        assert np.array_equal(pos[i, :k], np.flatnonzero(mask[i]))
        assert np.all(w[i, :k] == 1) and np.all(w[i, k:] == 0)
    assert fields["images"].min() >= -1 and fields["images"].max() <= 1


def test_pretraining_batch_contents(tokenizer, corpus, full_run):
    special = P.special_token_ids(tokenizer)
    texts = [r["text"] for r in corpus["text"] + corpus["pair"]]
    corpus_ids = {tuple(np.asarray(tokenizer(t)).tolist()) for t in texts}
    for batch in full_run[1][:3]:
        _check_text(batch["text"], special, corpus_ids)
        _check_text(batch["image_text"], special, corpus_ids)
        _check_image(batch["image"])
        _check_image(batch["image_text"])


def test_pretraining_is_deterministic_and_resumable(tokenizer, corpus, full_run):
    full = full_run[1]
    again = _take(_build(tokenizer, corpus), 6)
    resumed = _take(_build(tokenizer, corpus, start_step=4), 2)
    other_seed = _take(_build(tokenizer, corpus, seed=6), 1)

    def same(a, b):
        return all(np.array_equal(a[s][k], b[s][k]) for s in a for k in a[s])

    assert all(same(a, b) for a, b in zip(full, again))
    assert same(full[4], resumed[0]) and same(full[5], resumed[1])
    assert not same(full[0], other_seed[0])
    assert not same(full[0], full[1])


def test_streams_can_be_disabled(tokenizer, corpus):
    only_images = P.make_pretraining_dataset(_config(), image_records=corpus["image"])
    assert set(only_images.element_spec) == {"image"}
    no_pairs = _build(tokenizer, corpus, pair_batch_size=0)
    assert set(no_pairs.element_spec) == {"text", "image"}
    with pytest.raises(ValueError, match="No pretraining stream"):
        P.make_pretraining_dataset(_config())
    with pytest.raises(ValueError, match="tokenizer"):
        P.make_pretraining_dataset(_config(), text_records=corpus["text"])
    with pytest.raises(ValueError, match="one image per record"):
        P.make_pretraining_dataset(_config(), image_records=demo.demo_records("nlvr2", 2))


def test_pretraining_batch_runs_through_the_backbone(tokenizer, corpus):
    from vlbeit_keras import VLBEiTBackbone

    backbone = VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    config = P.PretrainingInputConfig.from_backbone(
        backbone, text_batch_size=2, image_batch_size=2, pair_batch_size=2)
    assert config.image_size == (32, 32) and config.patch_size == 8
    assert config.pair_text_length == 8 and config.text_length == 8
    assert config.grid_size == (4, 4) and config.block_mask_generator().num_positions == 6
    with pytest.raises(ValueError, match="multiple"):
        P.PretrainingInputConfig(image_size=30, patch_size=8)
    ds = P.make_pretraining_dataset(config, tokenizer, text_records=corpus["text"],
                                    image_records=corpus["image"], pair_records=corpus["pair"])
    batch = _numpy(next(iter(ds)))
    mask_token = np.zeros((backbone.hidden_dim,), "float32")
    img = backbone.encode_image(batch["image"]["images"], patch_mask=batch["image"]["patch_mask"],
                                mask_token=mask_token)
    assert tuple(img["image_sequence_output"].shape) == (2, 17, 32)
    txt = backbone.encode_text(batch["text"]["token_ids"], batch["text"]["padding_mask"])
    assert tuple(txt["text_sequence_output"].shape) == (2, 8, 32)
    pair = batch["image_text"]
    out = backbone.encode_image_text(pair["token_ids"], pair["padding_mask"], pair["images"],
                                     patch_mask=pair["patch_mask"], mask_token=mask_token)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out["text_sequence_output"])))


# ---------------------------------------------------------------------------
# Task pipelines
# ---------------------------------------------------------------------------


def test_task_epochs_are_permutations(tokenizer):
    records = demo.demo_records("nlvr", 12, image_size=32)
    ds = P.make_image_text_dataset(
        records, tokenizer, text_length=12, batch_size=4, labels=np.arange(12),
        image_config=ImagePreprocessingConfig(32, augment=True), training=True, seed=3)
    ys = [y.numpy() for _, y in ds.take(9)]
    epochs = [np.concatenate(ys[i:i + 3]) for i in (0, 3, 6)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(12))
    assert not np.array_equal(epochs[0], epochs[1])


def test_task_eval_is_ordered_single_pass(tokenizer):
    records = demo.demo_records("vqa", 10, image_size=32)
    answers = demo.demo_answer_vocabulary()
    labels = [answers.index(r["label"]) for r in records]
    ds = P.make_image_text_dataset(
        records, tokenizer, text_length=12, batch_size=4, labels=labels,
        image_config=ImagePreprocessingConfig(32, augment=True), training=False)
    batches = list(ds)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert np.concatenate([y.numpy() for _, y in batches]).tolist() == labels
    x = batches[0][0]
    assert x["images"].shape == (4, 32, 32, 3) and x["token_ids"].dtype == tf.int32
    assert x["padding_mask"].dtype == tf.int32


def test_multi_image_records(tokenizer):
    records = demo.demo_records("nlvr2", 4, image_size=32)
    ds = P.make_image_text_dataset(
        records, tokenizer, text_length=16, batch_size=2, label_key="label",
        image_config=ImagePreprocessingConfig(32), training=False)
    x, y = next(iter(ds))
    assert x["images"].shape == (2, 2, 32, 32, 3)
    assert y.numpy().tolist() == [r["label"] for r in records[:2]]
    # Left and right images differ.
    assert not np.allclose(x["images"][0, 0], x["images"][0, 1])


def test_paths_bytes_and_arrays(tmp_path, rng):
    arrays = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    png = tmp_path / "a.png"
    Image.fromarray(arrays[0]).save(png)
    buffer = io.BytesIO()
    Image.fromarray(arrays[1]).save(buffer, format="PNG")
    records = [{"image": str(png)}, {"image": buffer.getvalue()}, {"image": arrays[2]}]
    ds = P.make_image_dataset(records, image_config=ImagePreprocessingConfig((20, 30)),
                              batch_size=3)
    images = next(iter(ds))["images"].numpy()
    for got, want in zip(images, arrays):
        assert np.abs((got + 1) * 127.5 - want).max() < 0.01
    with pytest.raises(TypeError, match="record 0"):
        P.make_image_dataset([{"image": 3}], image_config=ImagePreprocessingConfig(8),
                             batch_size=1)


def test_text_dataset(tokenizer):
    ds = P.make_text_dataset(["a red circle", {"text": "two squares"}], tokenizer,
                             text_length=6, batch_size=2)
    x = next(iter(ds))
    special = P.special_token_ids(tokenizer)
    assert x["token_ids"].numpy()[0].tolist()[:5] == [
        special["cls"], tokenizer.token_to_id("a"), tokenizer.token_to_id("red"),
        tokenizer.token_to_id("circle"), special["sep"]]
    assert x["padding_mask"].numpy().tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]


def test_text_packer_with_a_plain_keras_hub_tokenizer(tokenizer):
    import keras_hub

    plain = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=demo.demo_vocabulary(), lowercase=True, oov_token="[UNK]")
    ours = P.TextPacker(tokenizer, 8)(tf.constant("Two red circles"))
    theirs = P.TextPacker(plain, 8)(tf.constant("Two red circles"))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(ours, theirs))


def test_long_text_is_truncated_keeping_sep(tokenizer):
    packer = P.TextPacker(tokenizer, 6)
    ids, mask = packer(tf.constant("a red circle and a blue square and a green triangle"))
    special = P.special_token_ids(tokenizer)
    assert ids.numpy()[0] == special["cls"] and ids.numpy()[-1] == special["sep"]
    assert mask.numpy().tolist() == [1] * 6


# ---------------------------------------------------------------------------
# Bad images
# ---------------------------------------------------------------------------


def _bad_files(tmp_path, rng):
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    return good, empty, garbage, truncated


def test_check_image_sources(tmp_path, rng):
    good, empty, garbage, truncated = _bad_files(tmp_path, rng)
    records = [{"image": str(p)} for p in (good, empty, garbage, truncated)]
    records.append({"image": str(tmp_path / "missing.png")})
    with pytest.warns(UserWarning) as caught:
        kept, report = P.check_image_sources(records, mode="decode")
    assert kept == records[:1]
    assert [s[0] for s in report.skipped] == [1, 2, 3, 4]
    messages = " ".join(str(w.message) for w in caught)
    for name in ("empty.png", "garbage.jpg", "truncated.png", "missing.png"):
        assert name in messages
    assert "zero-byte" in report.summary() and "missing file" in report.summary()
    kept, _ = P.check_image_sources(records[:1] + records[3:4], mode="header")
    assert len(kept) == 2  # the header check does not decode
    shared = _Report()
    with pytest.warns(UserWarning):
        P.check_image_sources(records, report=shared)
    assert [c[0] for c in shared.calls] == ["record 1", "record 2", "record 4"]
    assert all(c[4] == "check" for c in shared.calls)
    with pytest.raises(ValueError, match="empty.png"):
        P.check_image_sources(records, strict=True)


class _Report:
    def __init__(self):
        self.calls = []

    def skip(self, source, field, reason, detail="", *, stage="read"):
        self.calls.append((source, field, reason, detail, stage))


def test_undecodable_images_are_skipped_and_reported(tmp_path, rng):
    good, _, garbage, truncated = _bad_files(tmp_path, rng)
    records = [{"image": str(good), "source": "list.jsonl:1"},
               {"image": str(garbage), "source": "list.jsonl:2"},
               {"image": str(good), "source": "list.jsonl:3"},
               {"image": truncated.read_bytes(), "source": "list.jsonl:4"}]
    report = _Report()
    ds = P.make_image_dataset(records, image_config=ImagePreprocessingConfig(8),
                              labels=[0, 1, 2, 3], batch_size=4, report=report)
    x, y = next(iter(ds))
    assert y.numpy().tolist() == [0, 2]
    sources = sorted(c[0] for c in report.calls)
    assert sources == ["list.jsonl:2", "list.jsonl:4"]
    assert all(c[4] == "decode" and c[1] == "image" for c in report.calls)
    assert any("garbage.jpg" in c[3] for c in report.calls)
    # Default report: the readers' SkipReport (a DataSkipWarning per skip).
    from vlbeit_keras.data.readers import DataSkipWarning

    with pytest.warns(DataSkipWarning, match="garbage.jpg"):
        list(P.make_image_dataset(records, image_config=ImagePreprocessingConfig(8),
                                  batch_size=4))
    # Pretraining: the bad records never reach a batch; each is reported once.
    report = _Report()
    ds = P.make_pretraining_dataset(_config(image_batch_size=2), image_records=records,
                                    report=report)
    for batch in ds.take(4):
        assert batch["image"]["images"].shape == (2, 32, 32, 3)
    assert sorted(c[0] for c in report.calls) == ["list.jsonl:2", "list.jsonl:4"]


# ---------------------------------------------------------------------------
# model.fit on the current backend
# ---------------------------------------------------------------------------


def test_fit_on_task_dataset(tokenizer):
    records = demo.demo_records("nlvr", 16, image_size=32)
    ds = P.make_image_text_dataset(
        records, tokenizer, text_length=8, batch_size=4, label_key="label",
        image_config=ImagePreprocessingConfig(32, augment=True), training=True)
    token_ids = keras.Input((8,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((8,), dtype="int32", name="padding_mask")
    images = keras.Input((32, 32, 3), name="images")
    text = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(tokenizer.vocabulary_size(), 4)(token_ids))
    text = text * keras.ops.cast(keras.ops.sum(padding_mask, axis=1, keepdims=True) > 0, "float32")
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    logits = keras.layers.Dense(2)(keras.layers.Concatenate()([text, pooled]))
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask,
                         "images": images}, logits)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_pretrainer_fits_on_the_pipeline(tokenizer, corpus):
    """VLBEiTPretrainer (MLM + MIM + MVLM) trains on these batches on this backend,
    with a built-in visual tokenizer making the MIM targets."""
    from vlbeit_keras import VLBEiTBackbone
    from vlbeit_keras.data.visual_tokenizers import RandomProjectionTokenizer
    from vlbeit_keras.models.vlbeit_pretrainer import VLBEiTPretrainer

    backbone = VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    config = P.PretrainingInputConfig.from_backbone(
        backbone, text_batch_size=2, image_batch_size=2, pair_batch_size=2)
    ds = P.make_pretraining_dataset(config, tokenizer, text_records=corpus["text"],
                                    image_records=corpus["image"], pair_records=corpus["pair"])
    pretrainer = VLBEiTPretrainer(
        backbone, visual_tokenizer=RandomProjectionTokenizer(patch_size=8, codebook_size=64))
    pretrainer.compile()
    history = pretrainer.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    for name in ("loss", "mlm_loss", "mim_loss"):
        assert np.isfinite(history.history[name][0]), name
