"""VLBEiTTokenizer: BERT uncased WordPiece parity, packing, tf.data, saving."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from vlbeit_keras.data.text_tokenizer import SPECIAL_TOKENS
from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer
from vlbeit_keras.data.text_tokenizer import compute_vocabulary

CORPUS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs are playing with a red ball in the snow.",
    "There is a blue tower with exactly three blocks.",
    "The café serves crème brûlée; naïve tourists love it!",
    "A woman's umbrella (green) is next to the bench, isn't it?",
    "Kids jumped over 3-4 puddles at 10:30 a.m. near the U.S. border.",
    "A yellow circle touches the edge of a grey box.",
    "Zwei Hunde spielen im Schnee in Zürich.",
]

# Sentences exercising what BERT uncased normalisation does: accents,
# punctuation, case, CJK, control/format characters, unicode quotes,
# characters NFKC case folding would change, over-long words.
EDGE_SENTENCES = [
    "Café CRÈME brûlée à Zürich",
    "naïve résumé — “quoted” ‘text’ … ok",
    "日本語のテキスト and 中文 mixed",
    "Straße ﬁne Ǆ ① ² Ｆｕｌｌ",
    "e-mail: foo@bar.com (50%) $3.50! #tag & more*",
    "tab\tnew\nline\r\nend",
    "zero\u200bwidth joiner\u200d and soft\u00adhyphen",
    "ctrl\x07char\x00nul \ufffd replacement",
    "İstanbul ΑΒΓ ΟΔΟΣ Ωmega",
    "   leading and trailing   ",
    "",
    "   ",
    "a" * 150,
    "unaffable unbelievably wordpiece tokenization",
    "x" + "e\u0301" * 40,
]


def _hf_tokenizer(vocab_path):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.BertWordPieceTokenizer(
        str(vocab_path),
        lowercase=True,
        strip_accents=True,
        clean_text=True,
        handle_chinese_chars=True,
    )


def _graph_tokenize(tokenizer, texts):
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(64).map(tokenizer.tokenize)
    return [[int(t) for t in row] for batch in ds for row in batch.to_list()]


def _assert_parity(tokenizer, vocab_path, texts):
    hf = _hf_tokenizer(vocab_path)
    eager = [[int(t) for t in row] for row in tokenizer.tokenize(list(texts))]
    graph = _graph_tokenize(tokenizer, list(texts))
    mismatches = []
    for text, e, g in zip(texts, eager, graph):
        h = hf.encode(text, add_special_tokens=False).ids
        if e != h or g != h:
            mismatches.append((text, e, g, h))
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"


@pytest.fixture(scope="module")
def small_tokenizer():
    return VLBEiTTokenizer.train(CORPUS + EDGE_SENTENCES, vocabulary_size=150)


def test_trained_vocabulary_puts_special_tokens_first(small_tokenizer):
    tok = small_tokenizer
    assert tok.get_vocabulary()[:5] == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id) == (0, 1, 2, 3, 4)
    assert (tok.start_token_id, tok.end_token_id) == (2, 3)
    assert 20 < tok.vocabulary_size() <= 150
    assert "##" in "".join(tok.get_vocabulary())  # real WordPiece suffixes


def test_bert_layout_vocabulary_keeps_its_ids(tmp_path, small_tokenizer):
    # The bert-base-uncased layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101,
    # [SEP]=102, [MASK]=103, then the pieces.
    pieces = [t for t in small_tokenizer.get_vocabulary() if t not in SPECIAL_TOKENS]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab + pieces) + "\n", encoding="utf-8")
    tok = VLBEiTTokenizer.from_vocabulary_file(path)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id) == (0, 100, 101, 102, 103)
    out = tok.pack(["a dog", ""], sequence_length=6)
    ids = keras.ops.convert_to_numpy(out["token_ids"])
    assert ids[0, 0] == 101 and ids[1].tolist() == [101, 102, 0, 0, 0, 0]
    assert 102 in ids[0].tolist()
    _assert_parity(tok, path, CORPUS + EDGE_SENTENCES)


def test_parity_with_hf_bert_wordpiece_on_edge_cases(tmp_path, small_tokenizer):
    path = tmp_path / "vocab.txt"
    small_tokenizer.save_vocabulary(path)
    _assert_parity(small_tokenizer, path, CORPUS + EDGE_SENTENCES)


def test_bert_uncased_normalisation(small_tokenizer):
    tok = VLBEiTTokenizer(vocabulary=list(SPECIAL_TOKENS) + ["cafe", "creme", "ß", "straße",
                                                              "zerowidth", "a", "##b"])
    to_tokens = lambda s: [tok.id_to_token(int(i)) for i in tok.tokenize(s)]  # noqa: E731
    assert to_tokens("CAFÉ Crème") == ["cafe", "creme"]  # lower-cased, accents stripped
    assert to_tokens("STRASSE Straße") == ["[UNK]", "straße"]  # lower(), not NFKC casefold
    assert to_tokens("zero\u200bwidth") == ["zerowidth"]  # format char deleted, not split
    assert to_tokens("ab [MASK]") == ["a", "##b", "[UNK]", "[UNK]", "[UNK]"]  # never special


def test_pack_layout_truncation_and_empty_text(small_tokenizer):
    tok = small_tokenizer
    far_too_long = "a yellow circle " * 20000  # ~320k characters
    out = tok.pack(["A dog.", "", "   \t ", far_too_long], sequence_length=8)
    ids = keras.ops.convert_to_numpy(out["token_ids"])
    mask = keras.ops.convert_to_numpy(out["padding_mask"])
    assert ids.shape == mask.shape == (4, 8)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    n_real = len(tok.tokenize("A dog."))
    assert ids[0, 0] == tok.cls_token_id and ids[0, n_real + 1] == tok.sep_token_id
    assert mask[0].tolist() == [1] * (n_real + 2) + [0] * (6 - n_real)
    assert (ids[0, n_real + 2:] == tok.pad_token_id).all()
    for row in (1, 2):  # empty and whitespace-only
        assert ids[row].tolist() == [tok.cls_token_id, tok.sep_token_id] + [tok.pad_token_id] * 6
        assert mask[row].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert ids[3, 0] == tok.cls_token_id and ids[3, -1] == tok.sep_token_id
    assert mask[3].tolist() == [1] * 8
    np.testing.assert_array_equal(ids[3, 1:-1], tok.tokenize(far_too_long)[:6])
    single = tok.pack("A dog.", sequence_length=8)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(single["token_ids"]), ids[0])
    with pytest.raises(ValueError, match="sequence_length"):
        tok.pack("x", sequence_length=1)
    dense = VLBEiTTokenizer(vocabulary=tok.get_vocabulary(), sequence_length=5)
    assert keras.ops.convert_to_numpy(dense(["A dog."])).shape == (1, 5)
    with pytest.raises(ValueError, match="without `sequence_length`"):
        dense.pack("A dog.", sequence_length=8)


def test_pack_returns_backend_tensors_eagerly_and_matches_tf_data(small_tokenizer):
    tok = small_tokenizer
    texts = CORPUS + ["", "a " * 100]
    eager = tok.pack(texts, sequence_length=12)
    assert keras.ops.is_tensor(eager["token_ids"]) and keras.ops.is_tensor(eager["padding_mask"])
    ds = (
        tf.data.Dataset.from_tensor_slices(texts)
        .map(lambda s: tok.pack(s, sequence_length=12))
        .batch(4)
    )
    assert ds.element_spec["token_ids"].shape.as_list() == [None, 12]
    assert ds.element_spec["token_ids"].dtype == tf.int32
    assert ds.element_spec["padding_mask"].dtype == tf.int32
    graph_ids = np.concatenate([b["token_ids"].numpy() for b in ds])
    graph_mask = np.concatenate([b["padding_mask"].numpy() for b in ds])
    np.testing.assert_array_equal(graph_ids, keras.ops.convert_to_numpy(eager["token_ids"]))
    np.testing.assert_array_equal(graph_mask, keras.ops.convert_to_numpy(eager["padding_mask"]))
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(5).map(lambda s: tok.pack(s, 12))
    np.testing.assert_array_equal(np.concatenate([b["token_ids"].numpy() for b in batched]), graph_ids)
    # NumPy string arrays work eagerly too.
    from_numpy = tok.pack(np.array(texts), sequence_length=12)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(from_numpy["token_ids"]), graph_ids)
    from_tf = tok.pack(tf.constant(texts), sequence_length=12)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(from_tf["token_ids"]), graph_ids)


def test_compute_vocabulary_from_files_and_argument_errors(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    vocab = compute_vocabulary(files=[corpus], vocabulary_size=80, vocabulary_output_file=str(out))
    assert vocab[:5] == list(SPECIAL_TOKENS)
    assert out.read_text(encoding="utf-8").split("\n")[: len(vocab)] == vocab
    from_records = compute_vocabulary([{"text": t} for t in CORPUS], vocabulary_size=80)
    assert from_records == vocab
    with pytest.raises(ValueError, match="exactly one"):
        compute_vocabulary(vocabulary_size=10)
    with pytest.raises(ValueError, match="exactly one"):
        compute_vocabulary(CORPUS, 10, files=[corpus])
    with pytest.raises(TypeError, match="files"):
        compute_vocabulary("a single string", 10)


def test_vocabulary_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        VLBEiTTokenizer(vocabulary=["[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"])
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        VLBEiTTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        VLBEiTTokenizer.from_vocabulary_file(tmp_path / "vocab.txt")


def test_config_round_trip(small_tokenizer):
    config = small_tokenizer.get_config()
    assert config["vocabulary"] is None  # saved as an asset, not in the config
    assert config["lowercase"] is True and config["strip_accents"] is True
    restored = VLBEiTTokenizer.from_config(config)
    restored.set_vocabulary(small_tokenizer.get_vocabulary())
    assert restored.get_config() == config
    text = "The CAFÉ is Straße"
    np.testing.assert_array_equal(restored.tokenize(text), small_tokenizer.tokenize(text))
    obj = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(small_tokenizer))
    assert isinstance(obj, VLBEiTTokenizer) and obj.get_config() == config


def test_preset_round_trip_with_backbone(tmp_path, small_tokenizer):
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    backbone = VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    backbone.save_to_preset(str(tmp_path))
    small_tokenizer.save_to_preset(str(tmp_path))
    assert (tmp_path / "assets" / "tokenizer" / "vocabulary.txt").is_file()
    loaded = VLBEiTTokenizer.from_preset(str(tmp_path))
    assert isinstance(loaded, VLBEiTTokenizer)
    assert loaded.get_vocabulary() == small_tokenizer.get_vocabulary()
    assert loaded.mask_token_id == small_tokenizer.mask_token_id


_SAVED_MODEL_SCRIPT = """
import sys, keras, numpy as np
import vlbeit_keras
from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer
sys.path.insert(0, sys.argv[2])
from _holder import Holder  # noqa
model = keras.saving.load_model(sys.argv[1])
out = model.tokenizer.pack(["A dog."], sequence_length=8)
print(keras.ops.convert_to_numpy(out["token_ids"]).tolist())
"""

_HOLDER = '''
import keras

@keras.saving.register_keras_serializable(package="test_tokenizer")
class Holder(keras.Model):
    """A model that owns a tokenizer, as a keras-hub task owns its preprocessor."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.dense = keras.layers.Dense(2)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {"tokenizer": keras.saving.serialize_keras_object(self.tokenizer)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["tokenizer"]))
'''


def test_vocabulary_saved_with_a_keras_model_loads_in_fresh_process(tmp_path, small_tokenizer):
    (tmp_path / "_holder.py").write_text(_HOLDER)
    sys.path.insert(0, str(tmp_path))
    try:
        from _holder import Holder
    finally:
        sys.path.remove(str(tmp_path))
    model = Holder(small_tokenizer)
    model(np.zeros((1, 3), "float32"))
    path = tmp_path / "holder.keras"
    model.save(path)
    expected = keras.ops.convert_to_numpy(
        small_tokenizer.pack(["A dog."], sequence_length=8)["token_ids"]
    ).tolist()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib_root()), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _SAVED_MODEL_SCRIPT, str(path), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected)


def pathlib_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2]


def test_parity_with_hf_on_real_captions(tmp_path, shared):
    """A few hundred real captions / statements / questions from ../shared."""
    from vlbeit_keras.data.readers import read_coco_captions
    from vlbeit_keras.data.readers import read_daquar
    from vlbeit_keras.data.readers import read_flickr8k
    from vlbeit_keras.data.readers import read_nlvr

    coco = shared("data", "coco_mini_captions")
    flickr = shared("data", "flickr8k_test1k_224")
    nlvr = shared("data", "nlvr1")
    daquar = shared("data", "daquar_subset")
    texts = [r["text"] for r in read_coco_captions(
        coco / "annotations" / "captions_val2017.json", coco / "val2017", check_images=False)][:150]
    texts += [r["text"] for r in read_flickr8k(
        flickr / "Flickr8k.token.txt", flickr / "images", check_images=False)][:100]
    texts += [r["text"] for r in read_nlvr(nlvr / "dev" / "dev.json", check_images=False)][:100]
    texts += [r["text"] for r in read_daquar(
        daquar / "all_qa_pairs.txt", daquar / "images", strip_image_reference=False,
        check_images=False)][:50]
    assert len(texts) == 400
    vocab_path = tmp_path / "vocab.txt"
    # A small vocabulary forces many sub-word splits and some [UNK]s.
    tok = VLBEiTTokenizer.train(texts, vocabulary_size=300, vocabulary_output_file=str(vocab_path))
    _assert_parity(tok, vocab_path, texts + EDGE_SENTENCES)
    ids = tok.tokenize(texts + EDGE_SENTENCES)
    assert any(tok.unk_token_id in list(row) for row in ids)  # the oracle also checks [UNK]
    assert any(tok.id_to_token(int(i)).startswith("##") for row in ids for i in row)


def test_pack_with_several_lengths_after_a_call():
    # Regression: packers are created lazily per length, also after the
    # tokenizer has been called (built); this used to raise a Keras state-lock error.
    from vlbeit_keras.data.demo_corpus import demo_tokenizer

    tokenizer = demo_tokenizer()
    short = tokenizer.pack(["a red circle"], 8)["token_ids"]
    tokenizer(["a red circle"])
    long = tokenizer.pack(["a red circle"], 12)["token_ids"]
    assert tuple(short.shape) == (1, 8) and tuple(long.shape) == (1, 12)
    assert list(np.asarray(long)[0, :5]) == list(np.asarray(short)[0, :5])
