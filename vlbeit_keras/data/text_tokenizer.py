"""BERT-style uncased WordPiece tokenizer for VL-BEiT text (MODEL_SPEC §8).

``bert-base-uncased`` behaviour: lower-casing **and** accent stripping, split on
whitespace and punctuation (CJK characters split apart), greedy longest-match
WordPiece with the ``##`` suffix marker and ``[UNK]`` for words that cannot be
covered. Built on ``keras_hub.tokenizers.WordPieceTokenizer`` (tensorflow-text
``FastWordpieceTokenizer`` inside ``tf.data``; keras-hub's pure-Python path
when called eagerly), so it runs on the TensorFlow, JAX and PyTorch backends
and inside ``tf.data.Dataset.map``; tested for id parity with the HuggingFace
``tokenizers`` ``BertWordPieceTokenizer(lowercase=True, strip_accents=True)``.

Packing (MODEL_SPEC §1.2): ``[CLS] tokens [SEP] [PAD] ...`` to a fixed length
T, with a padding mask that is 1 for real tokens including [CLS]/[SEP]. Text
longer than T - 2 tokens is truncated and still ends with [SEP]; empty or
whitespace-only text packs to ``[CLS] [SEP] [PAD] ...``. The tokenizer never
interprets special-token strings written inside raw text (``"[MASK]"`` in a
caption is tokenized as ``[``, ``mask``, ``]``).
"""

import os

import keras
import keras_hub

from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

# Special tokens in the order a trained vocabulary puts them (ids 0..4).
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


# BERT's text cleaning (Google BERT ``tokenization.py`` ``_clean_text``, HF
# ``BertNormalizer(clean_text=True)``): NUL, U+FFFD and control / format
# characters (Unicode Cc, Cf) are deleted, except tab, newline and carriage
# return, which are whitespace. keras-hub would split words at them instead.
_CLEAN_PATTERN_RE2 = r"[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}\p{Cf}\x{FFFD}]"
_CLEAN_PATTERN_PY = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\uFFFD]"


def _clean_and_lower_tf(text, lowercase):
    """BERT cleaning (+ lower-casing) of a string tensor, in TensorFlow ops."""
    import tensorflow as tf

    text = tf.strings.regex_replace(text, _CLEAN_PATTERN_RE2, "")
    if lowercase:
        # Per-character lower case as HF's BertNormalizer: capital sigma
        # becomes "σ" everywhere (ICU / str.lower would write a final "ς").
        text = tf.strings.regex_replace(text, "Σ", "σ")
        text = tf.strings.lower(text, encoding="utf-8")
    return text


def _is_tf_tensor(x):
    import tensorflow as tf

    return isinstance(x, (tf.Tensor, tf.RaggedTensor))


def _text_dataset(data):
    """A ``tf.data.Dataset`` of strings from texts, records or a dataset."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, str):
        raise TypeError(
            "`data` must be a list of texts or a tf.data.Dataset; to train from "
            "text files pass `files=[...]`."
        )
    texts = [d["text"] if isinstance(d, dict) else d for d in data]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("`data` must be a non-empty list of strings (or records with 'text').")
    return tf.data.Dataset.from_tensor_slices(texts).batch(1024)


def compute_vocabulary(
    data=None,
    vocabulary_size=30522,
    *,
    files=None,
    lowercase=True,
    strip_accents=True,
    vocabulary_output_file=None,
):
    """Train a WordPiece vocabulary (keras-hub ``compute_word_piece_vocabulary``).

    The same pre-tokenization as the tokenizer (lower-case, strip accents,
    split on whitespace/punctuation/CJK) is applied before learning pieces.
    The special tokens come first: ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2,
    ``[SEP]`` = 3, ``[MASK]`` = 4.

    Args:
        data: a list of strings, a list of records with ``"text"`` (e.g. a
            reader's output), or a ``tf.data.Dataset`` of strings. Exactly
            one of ``data`` and ``files`` must be given.
        vocabulary_size: int, the maximum size (the learner may return fewer
            pieces on a small corpus).
        files: list of plain-text file paths, read line by line.
        lowercase, strip_accents: pre-tokenization (BERT uncased: both True).
        vocabulary_output_file: optional path to write the vocabulary
            (one token a line, the ``vocab.txt`` format).

    Returns:
        list of str, the vocabulary (index = token id).

    Raises:
        ValueError: neither or both of ``data``/``files``, or empty data.
    """
    import tensorflow as tf

    if (data is None) == (files is None):
        raise ValueError("Pass exactly one of `data` (texts or a dataset) and `files`.")
    if files is not None:
        paths = [os.fspath(f) for f in files]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"corpus file not found: {path}")
        dataset = tf.data.TextLineDataset(paths).batch(1024)
    else:
        dataset = _text_dataset(data)
    # Normalise exactly as VLBEiTTokenizer.tokenize does (BERT cleaning and
    # lower-casing), so every learnt piece is reachable at tokenization time.
    dataset = dataset.map(lambda text: _clean_and_lower_tf(text, lowercase))
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset,
        vocabulary_size,
        lowercase=False,
        strip_accents=strip_accents,
        reserved_tokens=list(SPECIAL_TOKENS),
    )
    if vocabulary_output_file is not None:
        with open(os.fspath(vocabulary_output_file), "w", encoding="utf-8") as f:
            f.write("".join(token + "\n" for token in vocabulary))
    return vocabulary


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """Uncased WordPiece tokenizer with BERT special tokens and fixed-length packing.

    A ``keras_hub.tokenizers.WordPieceTokenizer`` with ``lowercase=True``,
    ``strip_accents=True`` and ``oov_token="[UNK]"`` by default (the
    ``bert-base-uncased`` settings, MODEL_SPEC §8). The vocabulary is saved
    with the model as the keras-hub asset ``vocabulary.txt`` (``save_assets``
    / ``save_to_preset``); ``get_config`` stores no vocabulary.

    Special-token ids are attributes: ``pad_token_id``, ``unk_token_id``,
    ``cls_token_id``, ``sep_token_id``, ``mask_token_id`` (also
    ``start_token_id`` = [CLS], ``end_token_id`` = [SEP]). A trained
    vocabulary has them at 0..4; the published ``bert-base-uncased``
    ``vocab.txt`` keeps its own ids (0, 100, 101, 102, 103).

    Args:
        vocabulary: list of tokens, or the path of a ``vocab.txt`` file (one
            token a line). Must contain the five special tokens.
        lowercase: bool, default True.
        strip_accents: bool, default True.
        **kwargs: other ``WordPieceTokenizer`` arguments (``sequence_length``
            for unpacked dense output, ``suffix_indicator``, ``dtype``...).

    Raises:
        ValueError: a special token is missing from the vocabulary.

    Example:
    ```python
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer
    tokenizer = VLBEiTTokenizer.train(["a cat on a mat", "two dogs"], vocabulary_size=100)
    batch = tokenizer.pack(["A cat.", ""], sequence_length=8)
    batch["token_ids"]     # int32 (2, 8): [[2, cat..., 3, 0, ...], [2, 3, 0, ...]]
    batch["padding_mask"]  # int32 (2, 8), 1 = real token
    ```
    """

    backbone_cls = VLBEiTBackbone

    def __init__(self, vocabulary=None, lowercase=True, strip_accents=True, **kwargs):
        # Lower-casing is done here, BERT's way (Unicode lower case, as
        # Python's str.lower / Rust's to_lowercase), not by keras-hub, which
        # case-folds with NFKC (turning "ß" into "ss", "ﬁ" into "fi", "①"
        # into "1") where bert-base-uncased keeps the character.
        self._uncased = bool(lowercase)
        self._add_special_token(PAD_TOKEN, "pad_token")
        self._add_special_token(UNK_TOKEN, "unk_token")
        self._add_special_token(CLS_TOKEN, "cls_token")
        self._add_special_token(SEP_TOKEN, "sep_token")
        self._add_special_token(MASK_TOKEN, "mask_token")
        # keras-hub's generic names, used by its packers and generators.
        self._add_special_token(CLS_TOKEN, "start_token")
        self._add_special_token(SEP_TOKEN, "end_token")
        kwargs.setdefault("oov_token", UNK_TOKEN)
        # A plain (untracked) dict: packers hold no state and are created lazily,
        # after the tokenizer is built, per packed length.
        object.__setattr__(self, "_packers", {})
        if isinstance(vocabulary, os.PathLike):
            vocabulary = os.fspath(vocabulary)
        super().__init__(
            vocabulary=vocabulary,
            lowercase=False,
            strip_accents=strip_accents,
            **kwargs,
        )

    def _clean_and_lower_tf(self, inputs):
        import tensorflow as tf

        if isinstance(inputs, tf.RaggedTensor):
            return tf.ragged.map_flat_values(_clean_and_lower_tf, inputs, self._uncased)
        return _clean_and_lower_tf(tf.convert_to_tensor(inputs), self._uncased)

    def _clean_and_lower_python(self, inputs):
        import numpy as np
        import regex

        pattern = regex.compile(_CLEAN_PATTERN_PY)

        def fn(x):
            if isinstance(x, bytes):
                x = x.decode("utf-8", errors="replace")
            if isinstance(x, str):
                x = pattern.sub("", x)
                return x.replace("Σ", "σ").lower() if self._uncased else x
            if isinstance(x, (list, tuple)):
                return [fn(v) for v in x]
            return x

        if _is_tf_tensor(inputs) or keras.ops.is_tensor(inputs):
            inputs = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs)
        if isinstance(inputs, np.ndarray):
            inputs = inputs.tolist()
        return fn(inputs)

    def tokenize(self, inputs):
        """Token ids of ``inputs`` (no [CLS]/[SEP]); see ``WordPieceTokenizer.tokenize``.

        Applies BERT's text cleaning and lower-casing first, then keras-hub's
        accent stripping, splitting and WordPiece. Output: int32 ragged
        (lists eagerly, ``tf.RaggedTensor`` in ``tf.data``) for a batch, or a
        1-D array for one string; dense (B, sequence_length) when the
        tokenizer was built with ``sequence_length``.
        """
        if self._use_tf_workflow():
            inputs = self._clean_and_lower_tf(inputs)
        else:
            inputs = self._clean_and_lower_python(inputs)
        return super().tokenize(inputs)

    @classmethod
    def from_vocabulary_file(cls, path, **kwargs):
        """Load a standard ``vocab.txt`` (e.g. ``bert-base-uncased``'s)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        return cls(vocabulary=path, **kwargs)

    @classmethod
    def train(cls, data=None, *, vocabulary_size, files=None, vocabulary_output_file=None, **kwargs):
        """Train a vocabulary (:func:`compute_vocabulary`) and return a tokenizer.

        Args:
            data: list of texts / records with ``"text"`` / ``tf.data.Dataset``.
            vocabulary_size: int, maximum vocabulary size.
            files: plain-text files instead of ``data``.
            vocabulary_output_file: optional path to also write ``vocab.txt``.
            **kwargs: tokenizer arguments (``lowercase``, ``strip_accents``...).
        """
        vocabulary = compute_vocabulary(
            data,
            vocabulary_size,
            files=files,
            lowercase=kwargs.get("lowercase", True),
            strip_accents=kwargs.get("strip_accents", True),
            vocabulary_output_file=vocabulary_output_file,
        )
        return cls(vocabulary=vocabulary, **kwargs)

    def save_vocabulary(self, path):
        """Write the vocabulary as ``vocab.txt`` (one token a line)."""
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            for token in self.get_vocabulary():
                f.write(token + "\n")

    def _packer(self, sequence_length):
        if sequence_length not in self._packers:
            self._packers[sequence_length] = keras_hub.layers.StartEndPacker(
                sequence_length=sequence_length,
                start_value=self.cls_token_id,
                end_value=self.sep_token_id,
                pad_value=self.pad_token_id,
                return_padding_mask=True,
                dtype="int32",
            )
        return self._packers[sequence_length]

    def pack(self, inputs, sequence_length):
        """Tokenize and pack to ``[CLS] tokens [SEP] [PAD] ...`` of length T.

        Args:
            inputs: a string, or a batch of strings (list, NumPy array, or a
                ``tf.Tensor`` inside ``tf.data``).
            sequence_length: int T >= 2 (VL-BEiT pairs: 40).

        Returns:
            dict ``{"token_ids": int32 (B, T), "padding_mask": int32 (B, T)}``
            (shape (T,) for a single string); 1 in the mask marks real tokens
            including [CLS] and [SEP]. Backend tensors when called eagerly,
            ``tf.Tensor`` inside ``tf.data``. Text over T - 2 tokens is
            truncated keeping the final [SEP]; empty text gives
            ``[CLS] [SEP] [PAD] ...``.

        Raises:
            ValueError: ``sequence_length`` < 2, or the tokenizer was built
                with its own (unpacked) ``sequence_length``.
        """
        if self.sequence_length:
            raise ValueError(
                "pack() needs the ragged token output: build the tokenizer without "
                f"`sequence_length` (got sequence_length={self.sequence_length}) and "
                "pass the packed length to pack()."
            )
        sequence_length = int(sequence_length)
        if sequence_length < 2:
            raise ValueError(
                f"sequence_length must be >= 2 to hold [CLS] and [SEP], got {sequence_length}"
            )
        token_ids, padding_mask = self._packer(sequence_length)(self.tokenize(inputs))
        if _is_tf_tensor(padding_mask):
            import tensorflow as tf

            padding_mask = tf.cast(padding_mask, "int32")
            token_ids = tf.cast(token_ids, "int32")
        else:
            padding_mask = keras.ops.cast(padding_mask, "int32")
            token_ids = keras.ops.cast(token_ids, "int32")
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def get_config(self):
        config = super().get_config()
        config.update({"lowercase": self._uncased, "strip_accents": self.strip_accents})
        return config
