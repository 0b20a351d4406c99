"""Input-pipeline throughput: images/s for decode + augment + mask (+ text for pairs).

    python recipes/benchmark_input.py --data nlvr1            # ../shared/data/nlvr1/dev PNGs
    python recipes/benchmark_input.py --data demo --image-size 224
    python recipes/benchmark_input.py --data nlvr1 --streams image image_text --steps 100

For each stream it builds the pretraining pipeline of
:func:`vlbeit_keras.data.pipeline.make_pretraining_dataset` with only that
stream enabled and times ``--steps`` batches after ``--warmup`` batches:

- ``image`` (MIM): read file, decode PNG/JPEG, random resized crop + flip
  (bicubic, antialiased), normalise, BEiT block mask;
- ``image_text`` (MVLM): the same plus WordPiece tokenization, packing and
  50% text masking of the record's sentence.

The work runs on tf.data's CPU thread pool (``--threads``: 0 = TF default, all
cores). Numbers depend on the machine: the line printed names the core count.
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = pathlib.Path(os.environ.get("VLBEIT_SHARED_DIR", REPO.parent / "shared"))


def load_records(name, limit):
    """(records, image size (h, w)) of a benchmark data source."""
    if name == "nlvr1":
        from vlbeit_keras.data.readers import read_nlvr

        records = read_nlvr(SHARED / "data/nlvr1/dev/dev.json", per_image=True)
        size = (96, 400)  # 400x100 PNGs, aspect kept: a 6x25 grid at patch 16
    elif name == "coco_mini_captions":
        from vlbeit_keras.data.readers import read_coco_captions

        root = SHARED / "data/coco_mini_captions"
        records = read_coco_captions(root / "annotations/captions_val2017.json",
                                     root / "val2017")
        size = (224, 224)
    else:
        from vlbeit_keras.data.demo_corpus import demo_records

        records = demo_records("captions", limit or 1000, image_size=224)
        size = (224, 224)
    return list(records)[: limit or None], size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="nlvr1", choices=["nlvr1", "coco_mini_captions", "demo"])
    parser.add_argument("--streams", nargs="+", default=["image", "image_text"],
                        choices=["image", "image_text"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--image-size", default=None,
                        help="H,W or S (default: the data source's)")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="tf.data private thread pool size (0: TF default)")
    parser.add_argument("--limit", type=int, default=0, help="use the first N records")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from vlbeit_keras.data import pipeline as P
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer

    records, size = load_records(args.data, args.limit)
    if args.image_size:
        parts = [int(v) for v in args.image_size.split(",")]
        size = (parts[0], parts[-1])
    tokenizer = None
    if "image_text" in args.streams:
        tokenizer = VLBEiTTokenizer.train([r["text"] for r in records], vocabulary_size=2000)

    print(f"data: {args.data}, {len(records)} records; images {size[0]}x{size[1]}, "
          f"patch {args.patch_size}; batch {args.batch_size}; {os.cpu_count()} CPU cores; "
          f"tf.data threads: {args.threads or 'default'}")
    results = {}
    for stream in args.streams:
        config = P.PretrainingInputConfig(
            image_size=size, patch_size=args.patch_size,
            image_batch_size=args.batch_size if stream == "image" else 0,
            pair_batch_size=args.batch_size if stream == "image_text" else 0,
            text_batch_size=0, pair_text_length=40,
        )
        ds = P.make_pretraining_dataset(
            config, tokenizer, image_records=records if stream == "image" else None,
            pair_records=records if stream == "image_text" else None)
        if args.threads:
            options = tf.data.Options()
            options.threading.private_threadpool_size = args.threads
            ds = ds.with_options(options)
        iterator = iter(ds)
        for _ in range(args.warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = next(iterator)
        seconds = time.perf_counter() - start
        masked = float(tf.reduce_mean(tf.reduce_sum(
            tf.cast(batch[stream]["patch_mask"], tf.float32), axis=1)))
        rate = args.steps * args.batch_size / seconds
        results[stream] = rate
        print(f"{stream:>10}: {rate:8.1f} images/s ({args.steps} batches of {args.batch_size} "
              f"in {seconds:.2f}s; decode + random resized crop + flip + normalise + block "
              f"mask{' + tokenize + text mask' if stream == 'image_text' else ''}; "
              f"mean masked patches {masked:.1f} of {config.num_patches})")
    return results


if __name__ == "__main__":
    main()
