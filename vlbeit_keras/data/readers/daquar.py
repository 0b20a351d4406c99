"""DAQUAR: question line / answer line text files over NYU Depth V2 images."""

import os
import re

from vlbeit_keras.data.readers import report as rep

# "what is on the left side of the oven in the image1 ?" -> image id "image1".
_IMAGE_REF = re.compile(r"\b(image\d+)\b")


def read_daquar(
    qa_file,
    image_root,
    *,
    image_list=None,
    split=None,
    strip_image_reference=True,
    image_extension=".png",
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
    max_text_chars=rep.DEFAULT_MAX_TEXT_CHARS,
):
    """Read DAQUAR question-answer pairs (one record per pair).

    Format (Malinowski & Fritz 2014, ``qa.894.raw.txt`` / ``all_qa_pairs.txt``):
    alternating lines, a question ending ``"... in the imageN ?"`` then its
    answer (a word, or a comma-separated list such as ``"table, chair"``).
    Images are ``imageN.png``; ``train_images_list.txt`` /
    ``test_images_list.txt`` name the image ids (no extension) of each split.

    A line that should be a question but names no ``imageN`` is skipped
    ("malformed line") and reading re-synchronises on the next question; a
    question on the last line without an answer is skipped ("missing answer").

    Args:
        qa_file: path of the QA text file.
        image_root: folder of ``imageN.png``.
        image_list: optional split list; only its images are returned.
        split: str for the records; default: from the list's name
            (``test_images_list.txt`` -> ``"test"``), else None.
        strip_image_reference: replace ``"imageN"`` in the question text by
            ``"image"`` (``"... in the image ?"``), so a model cannot key on
            the image number; the id stays in ``image_id``.
        image_extension: file extension of the images.
        strict, report, check_images, verify_images, max_text_chars: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"image": str, "text": str question,
        "image_id": "imageN", "question_id": int (0-based pair index in the
        file), "answer": str raw answer, "answers": [answer], "split":
        str | None, "source": "<file>:<question line>"}``. ``answer`` /
        ``answers`` follow the VQA record keys, so :func:`build_answer_vocab`
        and :func:`attach_answer_targets` apply unchanged.
        ``info["images_without_questions"]`` lists images of ``image_list``
        that no question asks about.
    """
    report = rep.make_report(report, strict)
    start = report.count
    qa_file = rep.require_file(qa_file, "DAQUAR QA file")
    image_root = os.fspath(image_root)
    keep = None
    if image_list is not None:
        from vlbeit_keras.data.readers.flickr8k import read_split_list

        keep = set(read_split_list(image_list))
        if split is None:
            split = rep.split_from_name(image_list, [r"^(\w+?)_images_list"])
    with open(qa_file, "r", encoding="utf-8", errors="replace") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1)]
    lines = [(n, line) for n, line in lines if line]
    checker = rep.ImageChecker(check_images, verify_images)
    records = []
    pair_index = 0
    i = 0
    while i < len(lines):
        lineno, question = lines[i]
        source = f"{qa_file}:{lineno}"
        refs = _IMAGE_REF.findall(question)
        if not refs or not question.endswith("?"):
            report.skip(source, "question", "malformed line", "expected a question naming 'imageN' and ending in '?'")
            i += 1
            continue
        if i + 1 >= len(lines):
            report.skip(source, "answer", "missing answer", "question on the last line")
            break
        answer = lines[i + 1][1]
        if _IMAGE_REF.search(answer) and answer.endswith("?"):
            # The answer line is missing: the next line is another question.
            report.skip(source, "answer", "missing answer", "next line is a question")
            i += 1
            continue
        i += 2
        question_id = pair_index
        pair_index += 1
        image_id = refs[-1]
        if keep is not None and image_id not in keep:
            continue
        text = question
        if strip_image_reference:
            text = _IMAGE_REF.sub("image", text)
        text = rep.check_text(text, source, "question", report, max_text_chars)
        if text is None:
            continue
        image_path = os.path.join(image_root, image_id + image_extension)
        if not checker.check(image_path, source, "image", report):
            continue
        records.append(
            {
                "image": image_path,
                "text": text,
                "image_id": image_id,
                "question_id": question_id,
                "answer": answer,
                "answers": [answer],
                "split": split,
                "source": source,
            }
        )
    with_questions = {r["image_id"] for r in records}
    return rep.finish(
        records, report, start,
        {
            "num_images": len(with_questions),
            "images_without_questions": sorted(keep - with_questions) if keep is not None else [],
        },
    )
