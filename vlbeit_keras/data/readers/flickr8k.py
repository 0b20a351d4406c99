"""Flickr8k: tab-separated ``Flickr8k.token.txt`` plus split lists."""

import os

from vlbeit_keras.data.readers import report as rep


def read_split_list(path):
    """Image names of a split list file (one per line, blank lines ignored)."""
    path = rep.require_file(path, "split list")
    with open(path, "r", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_flickr8k(
    token_file,
    image_root,
    *,
    split_file=None,
    split=None,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read Flickr8k captions (one record per caption).

    Format (Hodosh et al. 2013, the Flickr8k text release):
    ``Flickr8k.token.txt`` lines ``<image file>#<0-4>\\t<caption>``; split
    lists ``Flickr_8k.{train,dev,test}Images.txt`` name one image file a line.
    ``Flickr8k.lemma.token.txt`` has the same layout and reads the same way.

    Args:
        token_file: path of ``Flickr8k.token.txt``.
        image_root: folder of the ``.jpg`` images.
        split_file: optional split list; only its images are returned.
        split: str for the records; default: from the split file's name
            (``Flickr_8k.testImages.txt`` -> ``"test"``), else None.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`. A line without a tab or without
            ``#<n>`` is skipped ("malformed line").

    Returns:
        :class:`RecordList` of ``{"image": str, "text": str, "image_id": str
        (file name without extension), "caption_id": str ("<file>#<n>"),
        "split": str | None, "source": "<token file>:<line>"}``, in file
        order. ``info["missing_captions"]`` lists split images with no caption.
    """
    report = rep.make_report(report, strict)
    start = report.count
    token_file = rep.require_file(token_file, "Flickr8k token file")
    image_root = os.fspath(image_root)
    keep = None
    if split_file is not None:
        keep = set(read_split_list(split_file))
        if split is None:
            split = rep.split_from_name(split_file, [r"(?:^|[._])([A-Za-z]+)Images\.txt$"])
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    seen = set()
    with open(token_file, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            source = f"{token_file}:{lineno}"
            caption_id, tab, caption = line.partition("\t")
            name, hash_, number = caption_id.rpartition("#")
            if not tab or not hash_ or not name or not number.isdigit():
                report.skip(source, None, "malformed line", "expected '<image>#<n>\\t<caption>'")
                continue
            if keep is not None and name not in keep:
                continue
            text = rep.check_text(caption, source, "caption", report, max_text_chars)
            if text is None:
                continue
            image_path = os.path.join(image_root, name)
            if not checker.check(image_path, source, "image", report):
                continue
            seen.add(name)
            records.append(
                {
                    "image": image_path,
                    "text": text,
                    "image_id": os.path.splitext(name)[0],
                    "caption_id": caption_id,
                    "split": split,
                    "source": source,
                }
            )
    missing = sorted(keep - seen) if keep is not None else []
    return rep.finish(
        records, report, start,
        {"num_images": len(seen), "missing_captions": missing},
    )
