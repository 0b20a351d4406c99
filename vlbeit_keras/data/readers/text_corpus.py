"""A plain text corpus: one text per line (text-only MLM stream)."""

import glob
import os

from vlbeit_keras.data.readers import report as rep


def _expand(paths):
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if any(c in p for c in "*?["):
            matches = sorted(glob.glob(p))
            if not matches:
                raise FileNotFoundError(f"text corpus pattern matched no file: {p}")
            out.extend(matches)
        else:
            out.append(p)
    return out


def read_text_corpus(
    paths,
    *,
    split=None,
    max_text_chars=None,
    strict=False,
    report=None,
):
    """Read plain text files, one record per non-blank line.

    Blank and whitespace-only lines are document separators in the usual
    BERT corpus layout, so they are not errors: they are counted in
    ``info["blank_lines"]`` without a warning. Invalid UTF-8 bytes are
    replaced (U+FFFD) rather than dropping the line.

    For corpora too large for a Python list (Wikipedia, BookCorpus), feed
    the files to ``tf.data.TextLineDataset`` in the input pipeline instead;
    this reader is for corpora of up to a few million lines.

    Args:
        paths: a path, a glob pattern, or a list of them (read in order).
        split: str stored in records.
        max_text_chars: skip lines longer than this ("text too long");
            default None (no limit: the tokenizer truncates to the model's
            length).
        strict, report: as in :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"text": str, "split", "source":
        "<file>:<line>"}``.

    Raises:
        FileNotFoundError: a file is missing or a pattern matches nothing.
    """
    report = rep.make_report(report, strict)
    start = report.count
    records = []
    blank = 0
    files = _expand(paths)
    for path in files:
        rep.require_file(path, "text corpus file")
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    blank += 1
                    continue
                source = f"{path}:{lineno}"
                text = rep.check_text(line, source, "text", report, max_text_chars)
                if text is not None:
                    records.append({"text": text, "split": split, "source": source})
    return rep.finish(records, report, start, {"blank_lines": blank, "files": files})
