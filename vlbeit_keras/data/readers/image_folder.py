"""A plain image folder: ImageNet-style class sub-folders, or a flat folder."""

import os

from vlbeit_keras.data.readers import report as rep

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _image_files(folder, extensions):
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(dirpath, name))
    return found


def read_image_folder(
    root,
    *,
    class_names=None,
    split=None,
    extensions=IMAGE_EXTENSIONS,
    strict=False,
    report=None,
    check_images=True,
    verify_images=False,
):
    """Read an image folder (one record per image).

    Layouts:

    - ``root/<class>/**/<image>``: ImageNet / ``torchvision.ImageFolder``
      style; each first-level sub-folder is a class, label ids follow the
      sorted class names (or ``class_names``).
    - ``root/<image>`` with no sub-folders: unlabelled images (e.g. the
      image-only stream of pretraining).

    Images directly in ``root`` next to class folders are skipped ("image
    outside class folder"). Files whose extension is not in ``extensions``
    (``.txt``, ``.DS_Store``...) are ignored without a warning.

    Args:
        root: the folder.
        class_names: optional list fixing the class order (to give a val
            folder the label ids of train); folders not in it are skipped
            ("unknown class").
        split: str stored in records.
        extensions: lower-case file extensions to read.
        strict, report, check_images, verify_images: as in
            :func:`read_coco_captions`.

    Returns:
        :class:`RecordList` of ``{"image": str, "image_id": str (path
        relative to root, without extension), "label": int, "class_name":
        str, "split", "source": <image path>}`` (no ``label``/``class_name``
        for a flat folder); ``info["class_names"]`` is the label order.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    report = rep.make_report(report, strict)
    start = report.count
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    extensions = tuple(e.lower() for e in extensions)
    entries = sorted(os.listdir(root))
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    top_files = [
        os.path.join(root, e)
        for e in entries
        if os.path.isfile(os.path.join(root, e)) and os.path.splitext(e)[1].lower() in extensions
    ]
    checker = rep.ImageChecker(check_images, verify_images)
    records = []

    def add(path, extra):
        if not checker.check(path, path, "image", report):
            return
        rel = os.path.splitext(os.path.relpath(path, root))[0]
        records.append(dict({"image": path, "image_id": rel.replace(os.sep, "/")}, **extra,
                            split=split, source=path))

    if not folders:
        for path in top_files:
            add(path, {})
        return rep.finish(records, report, start, {"class_names": []})

    for path in top_files:
        report.skip(path, "image", "image outside class folder", f"root {root} has class sub-folders")
    names = list(class_names) if class_names is not None else folders
    index = {name: i for i, name in enumerate(names)}
    for folder in folders:
        if folder not in index:
            report.skip(os.path.join(root, folder), "label", "unknown class",
                        f"{folder!r} is not in class_names")
            continue
        for path in _image_files(os.path.join(root, folder), extensions):
            add(path, {"label": index[folder], "class_name": folder})
    return rep.finish(records, report, start, {"class_names": names})
