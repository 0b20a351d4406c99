"""Deterministic, grouped train/val/test splits for datasets that ship none."""

import numpy as np


def split_records(records, sizes, *, key="image_id", seed=0):
    """Split records into named parts, grouping by ``key`` (e.g. by image).

    All records sharing ``record[key]`` land in the same part, so no image of
    the evaluation part is seen in training (DAQUAR, user folders). The
    assignment depends only on the set of key values and ``seed``, not on
    record order: the sorted distinct keys are permuted with
    ``numpy.random.default_rng(seed)`` and cut in the order of ``sizes``.

    Args:
        records: list of dicts.
        sizes: ordered dict ``{name: size}``; a float in (0, 1] is a fraction
            of the groups (rounded), an int an exact number of groups. The
            last part gets every group left over, so its size may be given as
            anything (e.g. ``{"train": 0.8, "test": 0.2}`` or
            ``{"minival": 1000, "train": None}``).
        key: record key to group by; None groups each record alone.
        seed: int.

    Returns:
        dict ``name -> list`` of record copies with ``"split"`` set to the
        part name, each list in the original record order.

    Raises:
        ValueError: empty ``sizes``, a negative or non-numeric size, or sizes
        asking for more groups than there are; KeyError: a record lacks
        ``key``.

    Example:
    ```python
    parts = split_records(read_daquar(...), {"train": 0.8, "test": 0.2}, seed=0)
    ```
    """
    names = list(sizes)
    if not names:
        raise ValueError("sizes must name at least one part")
    if key is None:
        groups = list(range(len(records)))
    else:
        groups = sorted({str(r[key]) for r in records})
    n = len(groups)
    order = np.random.default_rng(seed).permutation(n)
    counts = []
    for name in names[:-1]:
        size = sizes[name]
        if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
            raise ValueError(f"size of part {name!r} must be a number, got {size!r}")
        is_fraction = isinstance(size, (float, np.floating))
        if size < 0 or (is_fraction and size > 1):
            raise ValueError(
                f"size of part {name!r} must be a fraction in [0, 1] or a count >= 0, got {size}"
            )
        counts.append(int(round(size * n)) if is_fraction else int(size))
    if sum(counts) > n:
        raise ValueError(f"sizes {dict(sizes)} ask for {sum(counts)} groups but there are {n}")
    counts.append(n - sum(counts))
    assignment = {}
    offset = 0
    for name, count in zip(names, counts):
        for j in order[offset:offset + count]:
            assignment[groups[j]] = name
        offset += count
    parts = {name: [] for name in names}
    for i, record in enumerate(records):
        group = str(record[key]) if key is not None else i
        name = assignment[group]
        parts[name].append(dict(record, split=name))
    return parts
