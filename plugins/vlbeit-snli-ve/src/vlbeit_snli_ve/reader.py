"""Reader of the SNLI-VE JSON-lines files (``snli_ve_{train,dev,test}.jsonl``)."""

import os

from vlbeit_keras.data.readers import report as rep

# Class ids of the 3-way task, in the order used by the head's logits.
LABELS = ("entailment", "neutral", "contradiction")
LABEL_IDS = {name: i for i, name in enumerate(LABELS)}


def read_snli_ve(
    jsonl_file,
    image_root,
    *,
    split=None,
    image_extension=".jpg",
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read one SNLI-VE split: one record per (image, hypothesis) pair.

    Format (Xie et al. 2019, "Visual Entailment: A Novel Task for
    Fine-Grained Image Understanding", github.com/necla-ml/SNLI-VE): JSON
    lines, the SNLI records (Bowman et al. 2015) with the premise caption's
    Flickr30K image added: ``Flickr30K_ID`` (str, e.g. ``"4705552913"``; the
    image is ``<image_root>/<Flickr30K_ID>.jpg`` of ``flickr30k-images``),
    ``sentence2`` (the hypothesis, the text input), ``gold_label``
    (``"entailment"``, ``"neutral"`` or ``"contradiction"``); also
    ``pairID``, ``captionID``, ``sentence1`` (the caption the image replaces
    as premise) and ``annotator_labels``, kept when present.

    Skipped records (counted in ``report``; ``DataError`` when strict):
    malformed JSON lines, a missing ``Flickr30K_ID``, empty / missing /
    over-long ``sentence2``, a ``gold_label`` outside the three classes
    (SNLI's ``"-"``, no annotator majority), a missing image file.

    Args:
        jsonl_file: path of ``snli_ve_<split>.jsonl``.
        image_root: folder with the Flickr30K images.
        split: str stored in the records; default: ``train``/``dev``/``test``
            from the file name, else the file stem.
        image_extension: ``".jpg"``.
        strict, report, check_images, verify_images, max_text_chars: as in
            ``vlbeit_keras.data.readers.read_coco_captions``.

    Returns:
        ``RecordList`` of ``{"image": path, "text": hypothesis, "label": int
        class id (entailment 0, neutral 1, contradiction 2), "gold_label":
        str, "image_id": Flickr30K_ID (str), "pair_id": str or None,
        "premise": str or None, "split": str, "source": "<file>:<line>"}``.

    Raises:
        FileNotFoundError: the JSON-lines file is missing. DataError: strict
            mode, or an empty file.
    """
    report = rep.make_report(report, strict)
    start = report.count
    jsonl_file = os.fspath(jsonl_file)
    image_root = os.fspath(image_root)
    if split is None:
        split = rep.split_from_name(jsonl_file, [r"_(train|dev|test)\.jsonl$"]) or os.path.splitext(
            os.path.basename(jsonl_file))[0]
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    for source, obj in rep.iter_jsonl(jsonl_file, report, "SNLI-VE file"):
        image_id = rep.expect_key(obj, "Flickr30K_ID", source, report, (str, int))
        if image_id is None:
            continue
        image_id = str(image_id).strip()
        gold = obj.get("gold_label")
        if gold is None:
            report.skip(source, "gold_label", "missing field")
            continue
        if not isinstance(gold, str) or gold.strip().lower() not in LABEL_IDS:
            report.skip(source, "gold_label", "bad label",
                        f"expected one of {list(LABELS)}, got {gold!r}")
            continue
        gold = gold.strip().lower()
        text = rep.check_text(obj.get("sentence2"), source, "sentence2", report, max_text_chars)
        if text is None:
            continue
        image = os.path.join(image_root, image_id + image_extension)
        if not checker.check(image, source, "Flickr30K_ID", report):
            continue
        premise = obj.get("sentence1")
        records.append(
            {
                "image": image,
                "text": text,
                "label": LABEL_IDS[gold],
                "gold_label": gold,
                "image_id": image_id,
                "pair_id": obj.get("pairID"),
                "premise": premise if isinstance(premise, str) else None,
                "split": split,
                "source": source,
            }
        )
    return rep.finish(records, report, start, info={"class_names": list(LABELS)})
