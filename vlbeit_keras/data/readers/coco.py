"""COCO captions: the official ``captions_<split>.json`` annotation files."""

import os

from vlbeit_keras.data.readers import report as rep


def read_coco_captions(
    annotation_file,
    image_root,
    *,
    split=None,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read an official COCO captions file (one record per caption).

    Format (Lin et al. 2014, http://cocodataset.org, "captions_train2017.json"):
    a JSON object with ``images`` (``id``, ``file_name``, ...) and
    ``annotations`` (``id``, ``image_id``, ``caption``); ``info`` and
    ``licenses`` are ignored.

    Args:
        annotation_file: path of ``captions_<split>.json``.
        image_root: folder holding the images (``train2017/``); image paths
            are ``image_root / file_name``.
        split: str stored in each record; default: taken from the file name
            (``captions_val2017.json`` -> ``"val2017"``), else None.
        strict: raise :class:`DataError` on the first bad record instead of
            skipping it.
        report: a shared :class:`SkipReport` (default: a new one).
        check_images: check each image exists and is non-empty (cached per
            image, one ``stat`` each).
        verify_images: also open each image header with PIL.
        max_text_chars: skip captions longer than this (None: no limit).

    Returns:
        :class:`RecordList` of dicts, in annotation order:
        ``{"image": str path, "text": str caption, "image_id": str,
        "caption_id": int, "split": str | None, "source":
        "<file>#annotations[i]"}``.

    Raises:
        FileNotFoundError: the annotation file is missing.
        DataError: the file is not valid JSON or lacks ``images`` /
            ``annotations``; in strict mode, any bad record.
    """
    report = rep.make_report(report, strict)
    start = report.count
    path = os.fspath(annotation_file)
    data = rep.load_json(path, "COCO captions file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise rep.DataError(
            f"COCO captions file {path} must be a JSON object with 'images' and "
            "'annotations' lists (the official captions_<split>.json format)."
        )
    if split is None:
        split = rep.split_from_name(path, [r"captions_(\w+?)\.json$"])
    checker = rep.ImageChecker(check_images, verify_images)
    image_root = os.fspath(image_root)

    files = {}
    for i, image in enumerate(data["images"]):
        source = f"{path}#images[{i}]"
        image_id = rep.expect_key(image, "id", source, report, (int, str))
        file_name = rep.expect_key(image, "file_name", source, report, str)
        if image_id is None or file_name is None:
            continue
        files[str(image_id)] = os.path.join(image_root, file_name)

    records = []
    for i, ann in enumerate(data["annotations"]):
        source = f"{path}#annotations[{i}]"
        image_id = rep.expect_key(ann, "image_id", source, report, (int, str))
        if image_id is None:
            continue
        image_id = str(image_id)
        if image_id not in files:
            report.skip(source, "image_id", "unknown image_id", f"{image_id} not in 'images'")
            continue
        text = rep.check_text(ann.get("caption"), source, "caption", report, max_text_chars)
        if text is None:
            continue
        image_path = files[image_id]
        if not checker.check(image_path, source, "image", report):
            continue
        records.append(
            {
                "image": image_path,
                "text": text,
                "image_id": image_id,
                "caption_id": ann.get("id"),
                "split": split,
                "source": source,
            }
        )
    return rep.finish(records, report, start, {"num_images": len({r["image_id"] for r in records})})
