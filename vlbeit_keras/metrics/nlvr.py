"""NLVR (v1) and NLVR2 accuracy and consistency as the datasets define them.

NLVR v1 (Suhr et al., ACL 2017; ``lil-lab/nlvr`` ``nlvr/metrics_images.py``,
restated in ``../shared/data/nlvr1/SOURCE.md``):

- predictions are one per PNG, keyed by file name ``<split>-n-m-k.png``;
- **accuracy** is over images: every image k = 0..5 of every example ``n-m``
  counts once;
- **consistency** is over distinct sentences ``n`` (the identifier part
  before the dash): the fraction of ``n`` whose predictions for every image
  of every example ``n-m`` are all correct.

NLVR2 (Suhr, Zhou et al., ACL 2019; ``nlvr2/eval/metrics.py``):

- one prediction per example, keyed by identifier ``<split>-n-m-k``;
- **accuracy** over examples;
- **consistency** over sentences: examples share a sentence when their
  identifiers agree after blanking the third component (``m``).

Labels and predictions compare case-insensitively as strings
(``"true"``/``"false"``), as in the official scripts; booleans are accepted.
"""

import os


def _label_string(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int,)) and value in (0, 1):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    raise ValueError(f"{where}: expected a true/false label, got {value!r}.")


def nlvr_image_key(file_name):
    """``"dev-12-3-4.png"`` (any directory) -> ``"12-3-4"`` (official rule:
    drop the extension and the split prefix)."""
    base = os.path.basename(str(file_name))
    return "-".join(base.split(".")[0].split("-")[1:])


def nlvr_metrics(predictions, examples, images_per_example=6):
    """NLVR v1 accuracy over images and consistency over sentences.

    Args:
        predictions: mapping image file name (``"dev-12-3-4.png"``, a path
            is fine) -> predicted label (bool or ``"true"``/``"false"``), or
            an iterable of (file name, label) rows as in the official CSV.
        examples: iterable of dicts with ``identifier`` (``"n-m"``) and
            ``label`` (``"true"``/``"false"`` or bool), one per example, as
            the dataset's JSON lines.
        images_per_example: 6 in NLVR (the six box orderings).

    Returns:
        dict ``accuracy`` (fraction of images correct), ``consistency``
        (fraction of sentences n with every image correct), ``num_images``,
        ``num_sentences``.

    Raises:
        ValueError: a prediction is missing (lists up to 10 image keys, as
            the official script does), or a label is not true/false.
    """
    rows = predictions.items() if hasattr(predictions, "items") else predictions
    by_key = {}
    for i, (name, label) in enumerate(rows):
        by_key[nlvr_image_key(name)] = _label_string(label, f"prediction {i} ({name})")
    examples = list(examples)
    missing = [
        f"{ex['identifier']}-{k}"
        for ex in examples
        for k in range(images_per_example)
        if f"{ex['identifier']}-{k}" not in by_key
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} NLVR image predictions are missing, e.g. {missing[:10]}."
        )
    correct = 0
    consistent = {}
    for j, ex in enumerate(examples):
        label = _label_string(ex["label"], f"example {j} ({ex['identifier']})")
        sentence = ex["identifier"].split("-")[0]
        consistent.setdefault(sentence, True)
        for k in range(images_per_example):
            if by_key[f"{ex['identifier']}-{k}"] == label:
                correct += 1
            else:
                consistent[sentence] = False
    total = images_per_example * len(examples)
    return {
        "accuracy": correct / total if total else 0.0,
        "consistency": sum(consistent.values()) / len(consistent) if consistent else 0.0,
        "num_images": total,
        "num_sentences": len(consistent),
    }


def nlvr2_sentence_key(identifier):
    """Official NLVR2 grouping key: blank the third dash component."""
    parts = str(identifier).split("-")
    if len(parts) < 3:
        raise ValueError(
            f"NLVR2 identifier {identifier!r} does not have the form split-n-m-k."
        )
    parts[2] = ""
    return "-".join(parts)


def nlvr2_metrics(predictions, examples):
    """NLVR2 accuracy over examples and consistency over sentences.

    Args:
        predictions: mapping identifier -> label (bool / "true" / "false"),
            or iterable of (identifier, label) rows.
        examples: iterable of dicts with ``identifier`` and ``label``.

    Returns:
        dict ``accuracy``, ``consistency``, ``num_examples``,
        ``num_sentences``.

    Raises:
        ValueError: a prediction is missing, or a malformed identifier/label.
    """
    rows = predictions.items() if hasattr(predictions, "items") else predictions
    by_id = {
        str(name): _label_string(label, f"prediction {i} ({name})")
        for i, (name, label) in enumerate(rows)
    }
    examples = list(examples)
    missing = [ex["identifier"] for ex in examples if ex["identifier"] not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} NLVR2 predictions are missing, e.g. {missing[:10]}.")
    correct = 0
    consistent = {}
    for j, ex in enumerate(examples):
        key = nlvr2_sentence_key(ex["identifier"])
        consistent.setdefault(key, True)
        if by_id[ex["identifier"]] == _label_string(ex["label"], f"example {j}"):
            correct += 1
        else:
            consistent[key] = False
    return {
        "accuracy": correct / len(examples) if examples else 0.0,
        "consistency": sum(consistent.values()) / len(consistent) if consistent else 0.0,
        "num_examples": len(examples),
        "num_sentences": len(consistent),
    }
