"""Train a visual tokenizer (MIM targets) on a data source, save it, print codebook usage.

    python recipes/train_visual_tokenizer.py                       # demo corpus, 64 px
    python recipes/train_visual_tokenizer.py --data nlvr1          # ../shared/data/nlvr1/hidden
    python recipes/train_visual_tokenizer.py --data coco_mini_captions
    python recipes/train_visual_tokenizer.py --smoke               # seconds, for CI
    python recipes/train_visual_tokenizer.py tokenizer.codebook_size=1024 output=/tmp/vt.keras

Any config field can be overridden with ``field=value`` (``vlbeit_keras.config``).
The tokenizer is a :class:`vlbeit_keras.data.visual_tokenizers.KMeansTokenizer`
by default (``tokenizer.type`` names any registered visual tokenizer that has
a ``fit_codebook`` method). Images go through the same tf.data pipeline as
pretraining (decode, resize, normalise to [-1, 1]) without augmentation.

Printed: codebook usage (codes used, dead codes, perplexity) on the training
patches and on held-out images, and where the tokenizer was saved. Load it
with ``vlbeit_keras.data.visual_tokenizers.load_visual_tokenizer(path)`` and
pass it to ``VLBEiTPretrainer(visual_tokenizer=...)``.
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlbeit_keras.config import Config  # noqa: E402
from vlbeit_keras.config import apply_overrides  # noqa: E402

SHARED = pathlib.Path(os.environ.get("VLBEIT_SHARED_DIR", REPO.parent / "shared"))

# Data presets: reader name, reader arguments, image size. Image size and patch
# size must match the backbone the tokenizer will serve.
DATA = {
    # The embedded synthetic corpus: no files needed. 64 px, patch 16 = the
    # small preset (4x4 grid).
    "demo": dict(source="demo", kwargs=dict(task="images", num_examples=2000, image_size=64),
                 image_size=(64, 64), resize_mode="squash"),
    # NLVR (v1) 400x100 images: keep the aspect ratio (MODEL_SPEC §9.2), 96x400
    # = a 6x25 grid at patch 16; one record per PNG.
    "nlvr1": dict(source="nlvr", kwargs=dict(json_file=str(SHARED / "data/nlvr1/hidden/hidden.json"),
                                             per_image=True),
                  image_size=(96, 400), resize_mode="crop"),
    # COCO photographs at the pretraining resolution of the small demo runs.
    "coco_mini_captions": dict(
        source="coco_captions",
        kwargs=dict(annotation_file=str(SHARED / "data/coco_mini_captions/annotations/"
                                         "captions_val2017.json"),
                    image_root=str(SHARED / "data/coco_mini_captions/val2017")),
        image_size=(128, 128), resize_mode="squash"),
}


def get_config(arg=None):
    """``arg``: ``"data=<preset>"`` and/or ``"smoke"``, comma-separated."""
    args = dict(a.split("=", 1) if "=" in a else (a, True) for a in (arg or "").split(",") if a)
    preset = DATA[args.get("data", "demo")]
    smoke = bool(args.get("smoke", False))
    config = Config(
        data=dict(
            source=preset["source"],
            kwargs=dict(preset["kwargs"]),
            max_images=0,  # 0 = all images the source returns
            holdout_fraction=0.1,  # usage is also reported on images not trained on
        ),
        image=dict(image_size=tuple(preset["image_size"]), resize_mode=preset["resize_mode"],
                   batch_size=64),
        tokenizer=dict(
            type="kmeans",
            patch_size=16,  # = the backbone's patch size
            # 64-1024 for small data (MODEL_SPEC §7); 256 keeps most codes
            # alive on a few thousand images. Base-scale runs use 8192.
            codebook_size=256,
            pool_size=4,  # 4x4x3 = 48 features per patch: colour + coarse layout
            feature="pixels",
            metric="euclidean",
        ),
        training=dict(
            iterations=25,  # Lloyd iterations; inertia flattens after ~15 on the demo
            max_patches=200_000,  # k-means sample (uniform over all patches)
            init="kmeans++",
            seed=0,
        ),
        output=str(REPO / "runs" / "visual_tokenizer.keras"),
    )
    if smoke:
        if config.data.source == "demo":
            config.data.kwargs.num_examples = 64
        config.data.max_images = 64
        config.tokenizer.codebook_size = 32
        config.training.iterations = 3
        config.training.max_patches = 5_000
    return config


def _unique_images(records):
    """One record per image (captions datasets repeat the image per caption)."""
    seen, out = set(), []
    for r in records:
        key = r.get("image") if isinstance(r.get("image"), str) else r.get("image_id", id(r))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="demo", choices=sorted(DATA))
    parser.add_argument("--smoke", action="store_true", help="tiny run (seconds)")
    parser.add_argument("overrides", nargs="*", help="field=value config overrides")
    args = parser.parse_args(argv)
    config = get_config(f"data={args.data}" + (",smoke" if args.smoke else ""))
    apply_overrides(config, args.overrides)

    import numpy as np

    import vlbeit_keras
    from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
    from vlbeit_keras.data.pipeline import make_image_dataset
    from vlbeit_keras.data.visual_tokenizers import build_visual_tokenizer
    from vlbeit_keras.data.visual_tokenizers import codebook_usage
    from vlbeit_keras.data.visual_tokenizers import format_usage
    from vlbeit_keras.data.visual_tokenizers import load_visual_tokenizer
    from vlbeit_keras.data.visual_tokenizers import save_visual_tokenizer

    start = time.time()
    reader = vlbeit_keras.get_registry("datasets").get(config.data.source)
    records = _unique_images(reader(**config.data.kwargs))
    if config.data.max_images:
        records = records[: config.data.max_images]
    rng = np.random.default_rng(config.training.seed)
    order = rng.permutation(len(records))
    n_hold = int(round(len(records) * config.data.holdout_fraction))
    holdout = [records[i] for i in order[:n_hold]]
    train = [records[i] for i in order[n_hold:]]
    print(f"data: {config.data.source} {dict(config.data.kwargs)}")
    print(f"images: {len(train)} for training, {len(holdout)} held out; "
          f"size {config.image.image_size}, patch {config.tokenizer.patch_size}")

    image_config = ImagePreprocessingConfig(config.image.image_size,
                                            resize_mode=config.image.resize_mode)
    tok_kwargs = dict(config.tokenizer)
    tokenizer = build_visual_tokenizer(tok_kwargs.pop("type"), **tok_kwargs)
    if not hasattr(tokenizer, "fit_codebook"):
        raise SystemExit(f"visual tokenizer {config.tokenizer.type!r} has no fit_codebook().")
    train_ds = make_image_dataset(train, image_config=image_config,
                                  batch_size=config.image.batch_size)
    stats = tokenizer.fit_codebook(
        train_ds, max_patches=config.training.max_patches, iterations=config.training.iterations,
        init=config.training.init, seed=config.training.seed,
    )
    print(f"k-means: {stats['num_patches']} patches, {config.training.iterations} iterations, "
          f"{stats['restarts']} dead-code restarts, inertia "
          f"{stats['history'][0]['inertia']:.4f} -> {stats['inertia']:.4f}, "
          f"{stats['seconds']:.1f}s")
    print(f"usage on training patches: {format_usage(stats)}")
    if holdout:
        ids = [np.asarray(tokenizer(batch["images"]))
               for batch in make_image_dataset(holdout, image_config=image_config,
                                               batch_size=config.image.batch_size)]
        held = codebook_usage(np.concatenate(ids), tokenizer.codebook_size)
        print(f"usage on held-out images:  {format_usage(held)}")

    output = pathlib.Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_visual_tokenizer(tokenizer, output)
    reloaded = load_visual_tokenizer(output)
    assert type(reloaded) is type(tokenizer)
    print(f"saved {type(tokenizer).__name__} (K={tokenizer.codebook_size}) to {output} "
          f"[{time.time() - start:.1f}s total]")
    return stats


if __name__ == "__main__":
    main()
