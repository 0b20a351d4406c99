"""Bring your own data: a generic JSON-lines / CSV / TSV image-text format."""

import csv
import os

from vlbeit_keras.data.readers import report as rep

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def _rows(path, fmt, report):
    """Yield ``(source, dict)`` rows of a JSONL or CSV/TSV file."""
    if fmt == "jsonl":
        yield from rep.iter_jsonl(path, report, "image-text file")
        return
    rep.require_file(path, "image-text file")
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        if not reader.fieldnames:
            raise rep.DataError(f"{path}: CSV/TSV file needs a header row")
        for row in reader:
            source = f"{path}:{reader.line_num}"
            if None in row:  # more cells than header columns
                report.skip(source, None, "malformed line", "more cells than header columns")
                continue
            if all(v in (None, "") for v in row.values()):
                continue
            yield source, {k: v for k, v in row.items() if v is not None}


def _csv_value(key, value, list_separator):
    if key in ("images", "answers"):
        return [v.strip() for v in value.split(list_separator) if v.strip()]
    if key == "label":
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return int(value)
        except ValueError:
            return value
    return value


def read_image_text(
    path,
    *,
    image_root=None,
    format=None,
    split=None,
    text_field="text",
    list_separator="|",
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read a generic image-text file (one record per row).

    Columns / keys (see ``docs/data.md``, "Bringing your own data"):

    - ``image``: image path, relative to ``image_root`` (default: the file's
      folder) or absolute; or ``images``: several paths (JSON list, or in
      CSV/TSV one cell separated by ``list_separator``), e.g. NLVR2-style
      pairs. One of the two is required.
    - ``text`` (or the column named by ``text_field``): required unless
      ``text_field=None`` (image-only data).
    - optional: ``image_id`` (default: the image path relative to the root,
      without extension), ``label``, ``answers`` (list; CSV: separated by
      ``list_separator``), ``split``; any other column is passed through
      unchanged.

    CSV/TSV values are strings except: ``images``/``answers`` (lists) and
    ``label`` (``"true"``/``"false"`` -> bool, an integer -> int).

    Args:
        path: ``.jsonl``/``.json`` (JSON lines), ``.csv`` or ``.tsv`` file.
        image_root: base folder for relative image paths.
        format: ``"jsonl"``, ``"csv"`` or ``"tsv"``; default from the suffix.
        split: keep only rows whose ``split`` equals it (rows without a
            ``split`` column are all kept and get this split).
        text_field: name of the text column, or None for image-only rows.
        list_separator: separator of list cells in CSV/TSV.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of dicts with ``image`` (str) or ``images`` (list
        of str), ``text`` (unless ``text_field=None``), ``image_id``,
        ``split``, ``source`` (``"<file>:<line>"``) and the optional/extra
        columns.

    Raises:
        FileNotFoundError: the file is missing. ValueError: unknown format.
        DataError: a CSV without header; in strict mode, any bad row.
    """
    report = rep.make_report(report, strict)
    start = report.count
    path = os.fspath(path)
    fmt = format or _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt not in ("jsonl", "csv", "tsv"):
        raise ValueError(
            f"Cannot tell the format of {path}; pass format='jsonl', 'csv' or 'tsv'."
        )
    image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(path)
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    for source, row in _rows(path, fmt, report):
        if fmt != "jsonl":
            row = {k: _csv_value(k, v, list_separator) for k, v in row.items()}
        row_split = row.get("split") if row.get("split") not in ("", None) else None
        if split is not None and row_split is not None and row_split != split:
            continue
        record = {k: v for k, v in row.items() if k not in ("image", "images", text_field)}
        if row.get("images") not in (None, "", []):
            names = row["images"]
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                report.skip(source, "images", "wrong type", "expected a list of paths")
                continue
            key = "images"
        elif isinstance(row.get("image"), str) and row["image"].strip():
            names = [row["image"].strip()]
            key = "image"
        else:
            report.skip(source, "image", "missing field", "need 'image' or 'images'")
            continue
        paths = [os.path.join(image_root, n) for n in names]
        if not all(checker.check(p, source, key, report) for p in paths):
            continue
        record[key] = paths if key == "images" else paths[0]
        if text_field is not None:
            text = rep.check_text(row.get(text_field), source, text_field, report, max_text_chars)
            if text is None:
                continue
            record["text"] = text
        if record.get("image_id") in (None, ""):
            record["image_id"] = "+".join(os.path.splitext(n)[0] for n in names)
        else:
            record["image_id"] = str(record["image_id"])
        if "answers" in record and not isinstance(record["answers"], list):
            report.skip(source, "answers", "wrong type", "expected a list")
            continue
        record["split"] = row_split if row_split is not None else split
        record["source"] = source
        records.append(record)
    return rep.finish(records, report, start)
