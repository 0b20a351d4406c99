"""Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``)."""

import os

from vlbeit_keras.data.readers import report as rep

KARPATHY_SPLITS = ("train", "restval", "val", "test")


def read_karpathy(
    json_file,
    image_root,
    *,
    split=None,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read a Karpathy split file (one record per caption).

    Format (Karpathy & Fei-Fei 2015, the ``dataset_*.json`` files of
    NeuralTalk2): ``{"dataset": "coco" | "flickr30k" | "flickr8k", "images":
    [{"filename", "filepath" (COCO only), "split", "sentences": [{"raw",
    "tokens", "sentid"}], "cocoid" (COCO) , "imgid"}]}``. Splits are
    ``train``, ``restval`` (COCO: the rest of val2014, usually added to train),
    ``val`` and ``test`` (COCO 5K / Flickr30K 1K test images used for
    retrieval, MODEL_SPEC §9.3).

    Args:
        json_file: path of ``dataset_coco.json`` / ``dataset_flickr30k.json``.
        image_root: COCO: the folder holding ``train2014/`` and ``val2014/``
            (``image_root/filepath/filename``); Flickr30K: the image folder
            (``image_root/filename``).
        split: None (all), one split name, or a list of names
            (e.g. ``["train", "restval"]``).
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"image": str, "text": str (the ``raw``
        sentence), "image_id": str (``cocoid`` for COCO, else the file name
        without extension), "caption_id": int (``sentid``), "split": str,
        "source": "<file>#images[i].sentences[j]"}``. Retrieval ground truth
        is matched by ``image_id``.

    Raises:
        FileNotFoundError, DataError: as in :func:`read_coco_captions`;
        ValueError for an unknown split name.
    """
    report = rep.make_report(report, strict)
    start = report.count
    path = os.fspath(json_file)
    if split is None:
        wanted = None
    else:
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(KARPATHY_SPLITS)
        if unknown:
            raise ValueError(
                f"Unknown Karpathy split(s) {sorted(unknown)}; known: {KARPATHY_SPLITS}."
            )
    data = rep.load_json(path, "Karpathy split file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise rep.DataError(
            f"Karpathy split file {path} must be a JSON object with an 'images' list."
        )
    checker = rep.ImageChecker(check_images, verify_images)
    image_root = os.fspath(image_root)
    records = []
    for i, entry in enumerate(data["images"]):
        source = f"{path}#images[{i}]"
        entry_split = rep.expect_key(entry, "split", source, report, str)
        if entry_split is None:
            continue
        if wanted is not None and entry_split not in wanted:
            continue
        filename = rep.expect_key(entry, "filename", source, report, str)
        sentences = rep.expect_key(entry, "sentences", source, report, list)
        if filename is None or sentences is None:
            continue
        filepath = entry.get("filepath") or ""
        image_path = os.path.join(image_root, filepath, filename)
        if "cocoid" in entry:
            image_id = str(entry["cocoid"])
        else:
            image_id = os.path.splitext(filename)[0]
        if not checker.check(image_path, source, "filename", report):
            continue
        for j, sentence in enumerate(sentences):
            s_source = f"{source}.sentences[{j}]"
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            text = rep.check_text(raw, s_source, "raw", report, max_text_chars)
            if text is None:
                continue
            records.append(
                {
                    "image": image_path,
                    "text": text,
                    "image_id": image_id,
                    "caption_id": sentence.get("sentid"),
                    "split": entry_split,
                    "source": s_source,
                }
            )
    return rep.finish(
        records, report, start,
        {"dataset": data.get("dataset"), "num_images": len({r["image_id"] for r in records})},
    )
