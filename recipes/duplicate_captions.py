"""How often a retrieval batch offers a duplicate caption as an ITM "negative".

    python recipes/duplicate_captions.py                      # demo captions
    python recipes/duplicate_captions.py --captions ../shared/data/coco_mini_captions/captions.json

A caption of image m that is word for word one of image i's captions is a
match for image i; drawn as a hard negative it teaches the ITM head that a
matching pair does not match. This script draws ``--batches`` random batches
of ``--batch-size`` records and prints, for the image rows and the text rows
of a batch, the fraction that have at least one such duplicate among their
candidate negatives (other image ids), the mean count per image row, and
the fraction of uniformly drawn negatives that are duplicates.
(docs/training_health.md, E6). Keys: :func:`vlbeit_keras.tasks.retrieval.normalize_caption`.
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_records(path, num_examples):
    """Demo captions (no path) or a COCO-format captions JSON (``annotations``
    with ``image_id`` and ``caption``)."""
    if path is None:
        from vlbeit_keras.data.demo_corpus import demo_records

        return [{"text": r["text"], "image_id": r["image_id"]}
                for r in demo_records("captions", num_examples)]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        return [{"text": a["caption"], "image_id": a["image_id"]} for a in data["annotations"]]
    except (KeyError, TypeError) as e:
        raise SystemExit(f"{path}: expected a COCO captions file with annotations[].caption / "
                         f".image_id ({e!r}).") from None


def duplicate_rates(records, batch_size, num_batches, seed=0):
    """dict: ``rows_with_duplicate``, ``duplicates_per_image_row``,
    ``uniform_negative_is_duplicate`` (fractions / counts over the draws),
    ``distinct_captions``, ``captions``."""
    import numpy as np

    from vlbeit_keras.tasks.retrieval import dense_image_ids
    from vlbeit_keras.tasks.retrieval import text_ids_and_captions

    ids = dense_image_ids([r["image_id"] for r in records])
    text_ids, caption_ids = text_ids_and_captions([r["text"] for r in records], ids.tolist())
    rng = np.random.default_rng(seed)
    rows, per_image, uniform = [], [], []
    for _ in range(num_batches):
        b = rng.choice(len(records), size=min(batch_size, len(records)), replace=False)
        # match[i, j]: text of record j is one of the captions of record i's image
        match = (caption_ids[b][:, None, :] == text_ids[b][None, :, None]).any(-1)
        other = ids[b][:, None] != ids[b][None, :]
        dup = match & other
        rows.extend(dup.any(1).tolist())  # image rows
        rows.extend(dup.any(0).tolist())  # text rows
        per_image.extend(dup.sum(1).tolist())
        for i in range(len(b)):
            candidates = np.flatnonzero(other[i])
            if candidates.size:
                uniform.append(bool(dup[i, rng.choice(candidates)]))
    return {
        "captions": len(records),
        "distinct_captions": int(len(set(text_ids.tolist()))),
        "rows_with_duplicate": float(np.mean(rows)),
        "duplicates_per_image_row": float(np.mean(per_image)),
        "uniform_negative_is_duplicate": float(np.mean(uniform)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", default=None, help="COCO captions JSON (default: demo corpus)")
    parser.add_argument("--num-examples", type=int, default=700, help="demo images (3 captions each; the demo recipe trains on 700)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = load_records(args.captions, args.num_examples)
    stats = duplicate_rates(records, args.batch_size, args.batches, args.seed)
    for key, value in stats.items():
        print(f"{key:<32}{value:.4f}" if isinstance(value, float) else f"{key:<32}{value}")


if __name__ == "__main__":
    main()
