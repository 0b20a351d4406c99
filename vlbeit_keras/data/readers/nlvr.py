"""NLVR2 and NLVR (v1): JSON-lines statements over images, true/false labels."""

import os

from vlbeit_keras.data.readers import report as rep


def _parse_label(value, source, report):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if value is None:
        report.skip(source, "label", "missing field")
    else:
        report.skip(source, "label", "bad label", f"expected 'true'/'false', got {value!r}")
    return None


def read_nlvr2(
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
    """Read an NLVR2 split (one record per sentence-and-image-pair example).

    Format (Suhr et al. 2019, github.com/lil-lab/nlvr, ``nlvr2/data/*.json``):
    JSON lines with ``sentence``, ``label`` (``"True"``/``"False"``),
    ``identifier`` (``"<split>-<set>-<pair>-<sentence>"``, e.g.
    ``"dev-850-0-0"``) and, for train, ``directory`` (the numbered sub-folder
    holding the images). The two images of an example are
    ``<identifier without its last "-<sentence>" part>-img0.png`` and
    ``-img1.png`` (MODEL_SPEC §9.2).

    Image lookup: ``image_root/<directory>/<name>`` when the record has a
    ``directory`` (train: ``image_root = .../images/train``), falling back to
    ``image_root/<name>`` (dev/test1 folders are flat).

    Args:
        json_file: path of ``train.json`` / ``dev.json`` / ``test1.json``.
        image_root: the split's image folder.
        split: str for the records; default: the identifier's prefix.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"images": [img0 path, img1 path], "text":
        str, "label": bool, "identifier": str (full, e.g. "dev-850-0-0"),
        "image_id": str (the pair, e.g. "dev-850-0"), "split": str,
        "source": "<file>:<line>"}``.

    Raises:
        FileNotFoundError: the JSON file is missing. DataError: strict mode.
    """
    report = rep.make_report(report, strict)
    start = report.count
    image_root = os.fspath(image_root)
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    for source, obj in rep.iter_jsonl(json_file, report, "NLVR2 file"):
        identifier = rep.expect_key(obj, "identifier", source, report, str)
        if identifier is None:
            continue
        parts = identifier.split("-")
        if len(parts) < 2:
            report.skip(source, "identifier", "bad identifier", repr(identifier))
            continue
        pair_id = "-".join(parts[:-1])
        label = _parse_label(obj.get("label"), source, report)
        if label is None:
            continue
        text = rep.check_text(obj.get("sentence"), source, "sentence", report, max_text_chars)
        if text is None:
            continue
        folders = []
        if obj.get("directory") not in (None, ""):
            folders.append(os.path.join(image_root, str(obj["directory"])))
        folders.append(image_root)
        images = []
        for k in (0, 1):
            name = f"{pair_id}-img{k}.png"
            candidates = [os.path.join(folder, name) for folder in folders]
            found = next((c for c in candidates if checker.problem(c) is None), None)
            if found is None:
                checker.check(candidates[0], source, f"image{k}", report)
                break
            images.append(found)
        if len(images) != 2:
            continue
        records.append(
            {
                "images": images,
                "text": text,
                "label": label,
                "identifier": identifier,
                "image_id": pair_id,
                "split": split or parts[0],
                "source": source,
            }
        )
    return rep.finish(records, report, start)


def _index_images(image_root):
    """File name -> path of every file under ``image_root`` (one walk)."""
    index = {}
    for dirpath, dirnames, filenames in os.walk(image_root):
        dirnames.sort()
        for name in filenames:
            index.setdefault(name, os.path.join(dirpath, name))
    return index


def read_nlvr(
    json_file,
    image_root=None,
    *,
    split=None,
    per_image=False,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read an NLVR (v1) split: one record per example (sentence + image set).

    Format (Suhr et al. 2017, github.com/lil-lab/nlvr, ``nlvr/<split>/``):
    ``<split>.json`` holds JSON lines with ``sentence``, ``label``
    (``"true"``/``"false"``), ``identifier`` ``"n-m"`` (n: the sentence's
    presentation, m = 0..3: the image set), ``directory`` and
    ``structured_rep`` (``directory`` is absent from some files, e.g. the
    hidden split; the images are then looked up in all numbered folders).
    Each example has six images, the six orderings of its
    three boxes, all with the example's label:
    ``images/<directory>/<split>-<n>-<m>-<k>.png`` for k = 0..5. A sentence
    (same n) appears in up to four examples, not all with the same label.

    Args:
        json_file: path of ``dev.json`` / ``train.json`` / ``test.json``.
        image_root: folder holding the numbered image folders; default
            ``<json folder>/images``.
        split: the file-name prefix of the images; default: the JSON file's
            stem (``dev.json`` -> ``"dev"``).
        per_image: if True, return one record per PNG (``"image"`` key, plus
            ``"image_index"`` k), the unit NLVR accuracy is computed over.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`. An example with any of its six images
            missing is skipped.

    Returns:
        :class:`RecordList` of ``{"images": [6 paths, k = 0..5], "text": str,
        "label": bool, "identifier": "n-m", "sentence_id": "n" (for the
        consistency metric), "image_id": "<split>-n-m", "split": str,
        "structured_rep": list (as shipped), "source": "<file>:<line>"}``;
        with ``per_image=True`` ``"image"`` (one path) and ``"image_index"``
        replace ``"images"``, and ``"image_id"`` is ``"<split>-n-m-k"``.

    Raises:
        FileNotFoundError: the JSON file is missing. DataError: strict mode.
    """
    report = rep.make_report(report, strict)
    start = report.count
    json_file = os.fspath(json_file)
    if split is None:
        split = os.path.splitext(os.path.basename(json_file))[0]
    if image_root is None:
        image_root = os.path.join(os.path.dirname(json_file), "images")
    image_root = os.fspath(image_root)
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    index = None
    for source, obj in rep.iter_jsonl(json_file, report, "NLVR file"):
        identifier = rep.expect_key(obj, "identifier", source, report, str)
        if identifier is None:
            continue
        if identifier.count("-") != 1:
            report.skip(source, "identifier", "bad identifier", f"expected 'n-m', got {identifier!r}")
            continue
        label = _parse_label(obj.get("label"), source, report)
        if label is None:
            continue
        text = rep.check_text(obj.get("sentence"), source, "sentence", report, max_text_chars)
        if text is None:
            continue
        names = [f"{split}-{identifier}-{k}.png" for k in range(6)]
        directory = obj.get("directory")
        if directory not in (None, ""):
            folder = os.path.join(image_root, str(directory))
            images = [os.path.join(folder, name) for name in names]
        else:
            # Some releases (e.g. hidden.json) omit "directory": find the
            # images in the numbered folders (indexed once per read).
            if index is None:
                index = _index_images(image_root)
            images = [index.get(name, os.path.join(image_root, name)) for name in names]
        if not all(checker.check(p, source, f"image{k}", report) for k, p in enumerate(images)):
            continue
        base = {
            "text": text,
            "label": label,
            "identifier": identifier,
            "sentence_id": identifier.split("-")[0],
            "image_id": f"{split}-{identifier}",
            "split": split,
            "structured_rep": obj.get("structured_rep"),
            "source": source,
        }
        if per_image:
            for k, path in enumerate(images):
                record = dict(base, image=path, image_index=k, image_id=f"{split}-{identifier}-{k}")
                records.append(record)
        else:
            records.append(dict(base, images=images))
    return rep.finish(records, report, start)
