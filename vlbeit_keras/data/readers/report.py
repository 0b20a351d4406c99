"""Skip reporting shared by every dataset reader and the input pipeline.

Bad records never crash a run by default: each reader checks every record it
returns and *skips* the ones it cannot use, counting them in a
:class:`SkipReport` and warning (:class:`DataSkipWarning`) with the file, the
line or record, and the field at fault. With ``strict=True`` the first bad
record raises :class:`DataError` instead. The report can be shared by several
readers and by the input pipeline (which reports image decode failures through
the same :meth:`SkipReport.skip` call with ``stage="decode"``), and a run prints
:meth:`SkipReport.summary` at its end.

Also here: :class:`RecordList` (what readers return) and the cheap per-field
checks (:func:`check_text`, :func:`check_image_file`) readers share.
"""

import collections
import dataclasses
import os
import stat
import threading
import warnings

# Captions, questions and NLVR sentences are 5-60 words (VL-BEiT packs pairs to
# T = 40 tokens, about 200 characters). A text 10x longer than that is almost
# certainly a broken record (a whole file in one field, a missing delimiter).
DEFAULT_MAX_TEXT_CHARS = 2000


class DataError(ValueError):
    """A dataset file or record is unusable (raised in strict mode, or always
    for problems that make a whole file unreadable)."""


class DataSkipWarning(UserWarning):
    """A record was skipped; the message names file, line/record and field."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """One skipped record.

    Attributes:
        source: where it came from, ``"path:line"`` (1-based line) for
            line-based files or ``"path#record"`` for JSON documents
            (e.g. ``"captions_val2017.json#annotations[12]"``).
        field: the field at fault (``"image"``, ``"text"``, ``"label"``...),
            or ``None`` for a whole line (malformed JSON).
        reason: short category used for counting, e.g. ``"missing file"``.
        detail: free text (the path that is missing, the JSON error...).
        stage: ``"read"`` (readers), ``"targets"`` (answer vocabulary),
            ``"decode"`` (input pipeline), or any stage name a caller uses.
    """

    source: str
    field: object
    reason: str
    detail: str = ""
    stage: str = "read"

    def message(self):
        where = self.source
        if self.field is not None:
            where += f": field '{self.field}'"
        text = f"{where}: {self.reason}"
        if self.detail:
            text += f" ({self.detail})"
        return text


class SkipReport:
    """Counts skipped records; warns for the first ones, or raises in strict mode.

    Thread-safe, so a ``tf.data`` map running Python code in parallel can
    report decode failures into it.

    Args:
        strict: bool. If True, :meth:`skip` raises :class:`DataError` instead
            of counting.
        max_warnings: int. Emit a :class:`DataSkipWarning` for each of the
            first ``max_warnings`` skips, then one notice that further skips
            are only counted. ``0`` silences warnings (counts are kept).
        max_examples: int. How many example skips to keep per
            ``(stage, reason)`` for :meth:`summary`.

    Example:
    ```python
    from vlbeit_keras.data.readers import SkipReport, read_coco_captions
    report = SkipReport()
    records = read_coco_captions("captions_val2017.json", "val2017", report=report)
    ...  # the pipeline adds decode failures with report.skip(..., stage="decode")
    print(report.summary())
    ```
    """

    def __init__(self, strict=False, max_warnings=20, max_examples=3):
        self.strict = bool(strict)
        self.max_warnings = int(max_warnings)
        self.max_examples = int(max_examples)
        self._counts = collections.Counter()
        self._examples = collections.defaultdict(list)
        self._warned = 0
        self._lock = threading.Lock()

    def skip(self, source, field, reason, detail="", *, stage="read"):
        """Record one skipped record (or raise :class:`DataError` if strict).

        Args:
            source: str, ``"path:line"`` or ``"path#record"``.
            field: str or None, the field at fault.
            reason: str, short category ("missing file", "empty text", ...).
            detail: str, extra information for the message.
            stage: str, pipeline stage ("read", "targets", "decode", ...).

        Raises:
            DataError: in strict mode, naming source, field and reason.
        """
        item = Skip(str(source), field, str(reason), str(detail), str(stage))
        if self.strict:
            raise DataError(
                item.message()
                + ". Stopping because strict=True; pass strict=False to skip "
                "such records with a counted warning."
            )
        with self._lock:
            key = (item.stage, item.reason)
            self._counts[key] += 1
            if len(self._examples[key]) < self.max_examples:
                self._examples[key].append(item)
            self._warned += 1
            number = self._warned
        if number <= self.max_warnings:
            warnings.warn(
                f"Skipped record #{number}: {item.message()}",
                DataSkipWarning,
                stacklevel=3,
            )
            if number == self.max_warnings:
                warnings.warn(
                    f"{self.max_warnings} records skipped; further skips are "
                    "counted without a warning each (see SkipReport.summary()).",
                    DataSkipWarning,
                    stacklevel=3,
                )

    @property
    def count(self):
        """Total number of skipped records (int)."""
        return sum(self._counts.values())

    def __len__(self):
        return self.count

    def counts(self):
        """``{(stage, reason): count}`` as a plain dict."""
        with self._lock:
            return dict(self._counts)

    def examples(self, stage=None, reason=None):
        """Kept example :class:`Skip` objects, optionally filtered."""
        with self._lock:
            items = [s for key in sorted(self._examples) for s in self._examples[key]]
        return [
            s
            for s in items
            if (stage is None or s.stage == stage)
            and (reason is None or s.reason == reason)
        ]

    def merge(self, other):
        """Add the counts and examples of another report into this one."""
        with self._lock:
            for key, n in other.counts().items():
                self._counts[key] += n
            for item in other.examples():
                key = (item.stage, item.reason)
                if len(self._examples[key]) < self.max_examples:
                    self._examples[key].append(item)
        return self

    def to_dict(self):
        """JSON-ready summary: total and per ``stage/reason`` counts with examples."""
        return {
            "skipped": self.count,
            "by_reason": {
                f"{stage}/{reason}": {
                    "count": n,
                    "examples": [s.message() for s in self._examples[(stage, reason)]],
                }
                for (stage, reason), n in sorted(self.counts().items())
            },
        }

    def summary(self):
        """Multi-line text for the end of a run ("no records skipped" if none)."""
        counts = self.counts()
        if not counts:
            return "Data: no records skipped."
        lines = [f"Data: {self.count} record(s) skipped:"]
        for (stage, reason), n in sorted(counts.items()):
            lines.append(f"  [{stage}] {reason}: {n}")
            for item in self._examples[(stage, reason)]:
                lines.append(f"      e.g. {item.message()}")
        return "\n".join(lines)

    def __repr__(self):
        return f"SkipReport(strict={self.strict}, skipped={self.count})"


class RecordList(list):
    """A plain ``list`` of record dicts, plus where they came from.

    Attributes:
        report: the :class:`SkipReport` that counted this read's skips (shared
            with other readers when one was passed in).
        info: dict of reader-specific metadata (e.g. ``class_names`` for an
            image folder, ``num_skipped`` for this read).
    """

    def __init__(self, records=(), report=None, info=None):
        super().__init__(records)
        self.report = report if report is not None else SkipReport()
        self.info = dict(info or {})


def make_report(report, strict):
    """The report a reader uses: the caller's, or a new one."""
    if report is None:
        return SkipReport(strict=strict)
    if strict and not report.strict:
        raise ValueError(
            "strict=True was passed together with a non-strict SkipReport; "
            "create the report with SkipReport(strict=True) instead."
        )
    return report


def finish(records, report, start_count, info=None):
    """Wrap ``records`` in a :class:`RecordList` with this read's skip count."""
    info = dict(info or {})
    info["num_skipped"] = report.count - start_count
    return RecordList(records, report=report, info=info)


def require_file(path, what):
    """Raise a clear FileNotFoundError if an annotation file is missing/empty.

    A missing or zero-byte *annotation* file is never skipped: nothing could be
    read from it, so the run must not start.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{what} is an empty (zero-byte) file: {path}")
    return path


def check_text(value, source, field, report, max_chars=DEFAULT_MAX_TEXT_CHARS):
    """Validate a text field; returns the stripped text, or None if skipped.

    Skips (reason): non-string values ("not a string"), empty or
    whitespace-only text ("empty text"), and text longer than ``max_chars``
    characters ("text too long"; ``max_chars=None`` disables that check).
    Text within the limit but longer than the model's token budget is kept;
    the tokenizer truncates it, keeping [SEP].
    """
    if value is None:
        report.skip(source, field, "missing field")
        return None
    if not isinstance(value, str):
        report.skip(source, field, "not a string", f"got {type(value).__name__}")
        return None
    text = value.strip()
    if not text:
        report.skip(source, field, "empty text")
        return None
    if max_chars is not None and len(text) > max_chars:
        report.skip(
            source, field, "text too long",
            f"{len(text)} characters > max_text_chars={max_chars}",
        )
        return None
    return text


class ImageChecker:
    """Cheap image checks, cached per path within one read.

    Checks that the file exists and is not empty; with ``verify=True`` also
    opens it with PIL and runs ``Image.verify()`` (reads the header and, for
    PNG, the chunk checksums; it does not decode all pixels). Full decoding
    errors are found by the input pipeline, which reports them with
    ``report.skip(path, "image", "decode failed", stage="decode")``.

    Args:
        enabled: bool. ``False`` skips all checks (paths are trusted).
        verify: bool. Add the PIL header check.
    """

    def __init__(self, enabled=True, verify=False):
        self.enabled = enabled
        self.verify = verify
        self._cache = {}

    def problem(self, path):
        """``None`` if the image looks fine, else ``(reason, detail)``."""
        if not self.enabled:
            return None
        if path in self._cache:
            return self._cache[path]
        result = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            result = ("missing file", path)
        except OSError as e:
            result = ("unreadable file", f"{path}: {e}")
        else:
            if not stat.S_ISREG(st.st_mode):
                result = ("not a file", path)
            elif st.st_size == 0:
                result = ("zero-byte file", path)
            elif self.verify:
                result = _pil_problem(path)
        self._cache[path] = result
        return result

    def check(self, path, source, field, report):
        """True if usable; otherwise reports a skip and returns False."""
        problem = self.problem(path)
        if problem is None:
            return True
        report.skip(source, field, problem[0], problem[1])
        return False


def _pil_problem(path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as e:  # PIL raises many types for corrupt files.
        return ("corrupt image", f"{path}: {type(e).__name__}: {e}")
    return None


def load_json(path, what):
    """Load a whole JSON document; a syntax error is a :class:`DataError`.

    A JSON document that does not parse cannot be partly used, so this raises
    (naming the file, line and column) even when ``strict=False``.
    """
    import json

    path = require_file(path, what)
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} "
                f"column {e.colno}"
            ) from None
        except UnicodeDecodeError as e:
            raise DataError(f"{what} {path} is not UTF-8 text: {e}") from None


def iter_jsonl(path, report, what):
    """Yield ``(source, obj)`` for each non-blank line of a JSON-lines file.

    A line that is not valid JSON, or not a JSON object, is skipped through
    ``report`` (reason "malformed JSON line"); blank lines are ignored.
    """
    import json

    path = require_file(path, what)
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                report.skip(source, None, "malformed JSON line", f"{e.msg} at column {e.colno}")
                continue
            if not isinstance(obj, dict):
                report.skip(source, None, "malformed JSON line", "not a JSON object")
                continue
            yield source, obj


def expect_key(obj, key, source, report, types=None):
    """``obj[key]`` if present (and of ``types``), else report a skip and return None."""
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        report.skip(source, key, "missing field")
        return None
    value = obj[key]
    if types is not None and not isinstance(value, types):
        report.skip(source, key, "wrong type", f"got {type(value).__name__}")
        return None
    return value


def split_from_name(path, patterns):
    """Guess a split name from a file name with the first matching regex group."""
    import re

    name = os.path.basename(os.fspath(path))
    for pattern in patterns:
        m = re.search(pattern, name)
        if m:
            return m.group(1)
    return None
