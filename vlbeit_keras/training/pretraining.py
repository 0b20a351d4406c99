"""The pretraining run behind ``recipes/pretrain.py``: data, tokenizers, model, fit, resume.

:func:`run_pretraining` composes registered parts from a config (see
``recipes/configs/pretrain.py`` and ``docs/pretraining.md``):

1. records from registered data sources, routed to the three streams
   (text-only for MLM, image-only for MIM, image-text pairs for MVLM);
2. a WordPiece vocabulary (loaded or trained on the run's texts) and a visual
   tokenizer (loaded, or trained on the run's images) saved in the workdir;
3. a backbone preset, a :class:`~vlbeit_keras.VLBEiTPretrainer` with the
   configured objectives, AdamW with warm-up + cosine decay;
4. ``model.fit`` on the resumable tf.data pipeline with progress bar,
   TensorBoard, CSV metrics and Keras ``BackupAndRestore``;
5. the backbone saved as ``.keras``, ``.weights.h5`` and a keras-hub preset.

Resuming: one Keras "epoch" is ``schedule.checkpoint_every`` optimiser steps;
``BackupAndRestore`` saves the full training state (weights, optimiser,
epoch) at the end of each. Killed and restarted with the same command, the
run reloads that state and the input pipeline starts at step
``epoch * checkpoint_every`` (the pipeline is a pure function of the step),
so no step is repeated or lost relative to the last checkpoint.
"""

import json
import pathlib
import time
import warnings

import keras

import vlbeit_keras
from vlbeit_keras.training.callbacks import RandomStateBackup
from vlbeit_keras.training.callbacks import StepLogger
from vlbeit_keras.training.callbacks import StopAfterSteps
from vlbeit_keras.training.callbacks import completed_epochs
from vlbeit_keras.training.health import monitor_from_config
from vlbeit_keras.training.schedule import plan_epochs

STREAMS = ("text", "image", "image_text")


# --------------------------------------------------------------------- data
def _image_key(record):
    image = record.get("image")
    if isinstance(image, str):
        return image
    return record.get("image_id") or id(record)


def collect_stream_records(sources):
    """Read every configured source and route its records to the streams.

    Args:
        sources: list of dicts ``{"reader": name, "kwargs": {...},
            "streams": ["text", "image", "image_text"], "pairs": "all" |
            "true_only"}``. ``reader`` is a registered data source;
            ``streams`` says which streams the source feeds; ``pairs:
            "true_only"`` keeps only records whose ``label`` is true as pairs
            (NLVR statements that hold for their image).

    Returns:
        (streams, reports): ``streams`` maps each stream to its record list
        (texts de-duplicated for MLM, images de-duplicated for MIM);
        ``reports`` lists the readers' skip reports.

    Raises:
        UnknownNameError: unknown reader name.
        ValueError: unknown stream name or ``pairs`` value.
    """
    registry = vlbeit_keras.get_registry("datasets")
    out = {s: [] for s in STREAMS}
    seen_text, seen_image = set(), set()
    reports = []
    for source in sources:
        reader = registry.get(source["reader"])
        records = reader(**dict(source.get("kwargs", {})))
        report = getattr(records, "report", None)
        if report is not None:
            reports.append(report)
        streams = tuple(source.get("streams", STREAMS))
        for stream in streams:
            if stream not in STREAMS:
                raise ValueError(f"Unknown stream {stream!r} in source {source['reader']!r}; use {STREAMS}.")
        pairs = source.get("pairs", "all")
        if pairs not in ("all", "true_only"):
            raise ValueError(f"`pairs` must be 'all' or 'true_only'; received {pairs!r}.")
        for record in records:
            text = record.get("text")
            has_image = record.get("image") is not None
            if "text" in streams and text and text not in seen_text:
                seen_text.add(text)
                out["text"].append({"text": text, "source": record.get("source")})
            if "image" in streams and has_image:
                key = _image_key(record)
                if key not in seen_image:
                    seen_image.add(key)
                    out["image"].append(record)
            if "image_text" in streams and has_image and text:
                if pairs == "true_only" and not bool(record.get("label")):
                    continue
                out["image_text"].append(record)
    return out, reports


def build_text_tokenizer(config, texts, workdir):
    """Load ``config.vocabulary_file``, use the demo vocabulary, or train one.

    ``config.type``: ``"demo"`` (the demo corpus's word vocabulary),
    ``"file"`` (a standard ``vocab.txt``) or ``"train"`` (WordPiece trained on
    ``texts`` with ``config.vocabulary_size`` entries). The vocabulary used is
    written to ``workdir/vocab.txt`` so a resumed run reuses it exactly.
    """
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer

    saved = pathlib.Path(workdir) / "vocab.txt"
    if saved.exists():
        return VLBEiTTokenizer.from_vocabulary_file(str(saved))
    if config.type == "demo":
        from vlbeit_keras.data.demo_corpus import demo_tokenizer

        tokenizer = demo_tokenizer()
    elif config.type == "file":
        tokenizer = VLBEiTTokenizer.from_vocabulary_file(config.vocabulary_file)
    elif config.type == "train":
        tokenizer = VLBEiTTokenizer.train(list(texts), vocabulary_size=int(config.vocabulary_size))
    else:
        raise ValueError(f"tokenizer.type must be 'demo', 'file' or 'train'; received {config.type!r}.")
    tokenizer.save_vocabulary(str(saved))
    return tokenizer


def build_visual_tokenizer(config, image_records, image_size, patch_size, workdir):
    """Load ``config.path`` or train a visual tokenizer on the run's images.

    The tokenizer is saved to ``workdir/visual_tokenizer.keras`` (reused when
    a run resumes) with its usage statistics
    (``workdir/visual_tokenizer_usage.json``). Returns (tokenizer, usage
    statistics or None).
    """
    from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
    from vlbeit_keras.data.pipeline import make_image_dataset
    from vlbeit_keras.data.visual_tokenizers import build_visual_tokenizer as build
    from vlbeit_keras.data.visual_tokenizers import load_visual_tokenizer
    from vlbeit_keras.data.visual_tokenizers import save_visual_tokenizer

    saved = pathlib.Path(workdir) / "visual_tokenizer.keras"
    usage = pathlib.Path(workdir) / "visual_tokenizer_usage.json"
    if saved.exists():
        # A resumed run: the usage measured when the codebook was trained.
        stats = json.loads(usage.read_text()) if usage.exists() else None
        return load_visual_tokenizer(saved), stats
    if config.path:
        tokenizer = load_visual_tokenizer(config.path)
        save_visual_tokenizer(tokenizer, saved)
        return tokenizer, None
    kwargs = {k: v for k, v in config.items() if k not in ("type", "path", "training")}
    tokenizer = build(config.type, patch_size=patch_size, **kwargs)
    stats = None
    if hasattr(tokenizer, "fit_codebook"):
        images = image_records[: int(config.training.max_images)] if config.training.max_images else image_records
        ds = make_image_dataset(
            images, image_config=ImagePreprocessingConfig(image_size, resize_mode=config.training.resize_mode),
            batch_size=64,
        )
        stats = tokenizer.fit_codebook(
            ds, max_patches=int(config.training.max_patches), iterations=int(config.training.iterations),
            seed=int(config.training.seed),
        )
    save_visual_tokenizer(tokenizer, saved)
    if stats:
        usage.write_text(json.dumps({k: v.item() if hasattr(v, "item") else v
                                     for k, v in stats.items()}))
    return tokenizer, stats


# --------------------------------------------------------------------- run
def build_backbone(config, vocabulary_size):
    """A fresh ``VLBEiTBackbone`` for ``config.model``: ``config.preset`` with
    ``config.overrides``, the tokenizer's ``vocabulary_size`` (int), the
    registered ``expert_type`` and ``remat`` applied. Raises the registry's
    unknown-name error for an unregistered expert kind."""
    overrides = dict(config.overrides)
    overrides.setdefault("vocabulary_size", int(vocabulary_size))
    if config.get("expert_type"):  # a registered expert kind (plugins included)
        overrides.setdefault("expert_type", config["expert_type"])
    if config.get("remat"):
        overrides["remat"] = True
    return vlbeit_keras.VLBEiTBackbone.from_preset(config.preset, load_weights=False, **overrides)


def preset_config(preset):
    """Constructor kwargs of a built-in preset name or a preset directory.

    Raises:
        ValueError: ``preset`` is neither (the message names
            ``model.preset`` and lists the built-in presets).
    """
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    if preset in BACKBONE_PRESETS:
        return dict(BACKBONE_PRESETS[preset]["config"])
    path = pathlib.Path(str(preset)) / "config.json"
    if not path.is_file():
        raise ValueError(
            f"model.preset={preset!r} is neither a built-in preset "
            f"({', '.join(BACKBONE_PRESETS)}) nor a preset directory with a config.json."
        )
    with open(path) as f:
        return dict(json.load(f)["config"])


def backbone_config(config, vocabulary_size):
    """The backbone's constructor kwargs for ``config.model`` without building it.

    Built-in preset config (or a preset directory's ``config.json``) plus the
    overrides; used to size the model-parallel layout before any variable
    exists (Keras places variables when they are created).
    """
    base = preset_config(config.preset)
    base.update(dict(config.overrides))
    if "vocabulary_size" not in dict(config.overrides):
        base["vocabulary_size"] = int(vocabulary_size)
    return base


def _process_workdir(workdir, process_index):
    """Process 0 writes ``workdir``; process i > 0 of a multi-host job ``workdir/process_i``."""
    return workdir if process_index == 0 else workdir / f"process_{process_index}"


def _setup_distribution(dist_config, config, vocabulary_size, needs_visual):
    """Set the Keras distribution of the run (before any model is built)."""
    from vlbeit_keras.distribution import setup_distribution

    sizes = backbone_config(config.model, vocabulary_size)
    info = setup_distribution(
        dist_config,
        hidden_dim=sizes["hidden_dim"],
        intermediate_dim=sizes["intermediate_dim"],
        vocabulary_size=sizes["vocabulary_size"],
        codebook_size=int(config.visual_tokenizer.codebook_size) if needs_visual else None,
    )
    if info["distribution"] is not None:
        print(f"distribution: {dist_config.get('kind')} over {info['num_devices']} devices "
              f"({type(info['distribution']).__name__}, mesh {info['distribution'].device_mesh.shape}); "
              f"process {info['process_index']} of {info['process_count']}, input shard "
              f"{info['shard_index']} of {info['num_shards']}", flush=True)
    return info


def run_pretraining(config):
    """Run (or resume) one pretraining job described by ``config``.

    Args:
        config: :class:`~vlbeit_keras.config.Config` with sections ``data``,
            ``tokenizer``, ``visual_tokenizer``, ``model`` (``preset``,
            ``overrides``, ``remat``), ``objectives``, ``optimizer``,
            ``schedule``, ``distribution`` (``kind``, ``model_parallel_size``,
            ``multi_host``; see :mod:`vlbeit_keras.distribution` and
            ``docs/scaling.md``), ``workdir``, ``seed``, ``mixed_precision``,
            ``debug`` (see ``recipes/configs/pretrain.py``).

    Returns:
        dict summary: first and last epoch metrics, steps, seconds, paths,
        distribution kind, device and process counts.

    The global Keras distribution set for the run is restored afterwards.
    """
    previous = keras.distribution.distribution()
    try:
        return _run_pretraining(config)
    finally:
        keras.distribution.set_distribution(previous)


def _run_pretraining(config):
    from vlbeit_keras.distribution import check_batch_divisible
    from vlbeit_keras.distribution import initialize_multi_host

    start = time.time()
    epochs, steps_per_epoch = plan_epochs(config.schedule)
    preset_config(config.model.preset)  # a misspelt preset fails before any work
    dist_config = dict(config.get("distribution") or {})
    process_index = 0
    if (dist_config.get("kind") or "none") != "none":
        # Before any JAX computation (keras.distribution.initialize).
        process_index, _ = initialize_multi_host(dist_config.get("multi_host"))
    workdir = _process_workdir(pathlib.Path(config.workdir), process_index)
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(int(config.seed))
    if config.mixed_precision:
        keras.config.set_dtype_policy(config.mixed_precision)
    # The pooler is not used by masked prediction (no ITM loss in VL-BEiT).
    warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooler")
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
    with open(workdir / "config.json", "w") as f:
        json.dump(config.to_dict(), f, indent=2)

    streams, reports = collect_stream_records(config.data.sources)
    print("records: " + ", ".join(f"{s}={len(r)}" for s, r in streams.items()), flush=True)

    tokenizer = build_text_tokenizer(config.tokenizer, [r["text"] for r in streams["text"] + streams["image_text"]], workdir)
    needs_visual = any(o in ("mim", "mvlm") or (isinstance(o, (list, tuple)) and o[0] in ("mim", "mvlm"))
                       for o in config.objectives)
    dist = _setup_distribution(dist_config, config, tokenizer.vocabulary_size(), needs_visual)
    backbone = build_backbone(config.model, tokenizer.vocabulary_size())
    print(f"backbone: {config.model.preset} {backbone.count_params():,} parameters, "
          f"image {backbone.image_size}, text {backbone.max_text_length}, "
          f"vocabulary {backbone.vocabulary_size}", flush=True)

    visual_tokenizer, stats = None, None
    if needs_visual:
        visual_tokenizer, stats = build_visual_tokenizer(
            config.visual_tokenizer, streams["image"] or streams["image_text"],
            backbone.image_size, backbone.patch_size, workdir,
        )
        if stats:
            from vlbeit_keras.data.visual_tokenizers import format_usage

            print(f"visual tokenizer: {format_usage(stats)}", flush=True)
            # The MIM chance value of the health monitor: ln(perplexity).
            visual_tokenizer.usage_stats = stats
        if dist["distribution"] is not None and visual_tokenizer.codebook_size != int(
                config.visual_tokenizer.codebook_size):
            raise ValueError(
                f"The visual tokenizer has {visual_tokenizer.codebook_size} codes but "
                f"visual_tokenizer.codebook_size={config.visual_tokenizer.codebook_size}; the "
                "model-parallel layout is sized from the config: set them equal."
            )

    pretrainer = vlbeit_keras.VLBEiTPretrainer(
        backbone, objectives=list(config.objectives), visual_tokenizer=visual_tokenizer
    )
    sched = config.schedule
    total_steps = epochs * steps_per_epoch
    opt = config.optimizer
    # Linear lr scaling with the per-step batch (MODEL_SPEC §6.4: 1e-3 at 6144).
    batch = sum(int(config.data[f"{s}_batch_size"]) for s in ("text", "image", "pair"))
    learning_rate = float(opt.learning_rate) * (batch / float(opt.reference_batch_size) if opt.scale_with_batch else 1.0)
    optimizer = vlbeit_keras.optimizers.pretraining_optimizer(
        pretrainer, learning_rate=learning_rate, total_steps=total_steps,
        warmup_steps=int(min(opt.warmup_steps, total_steps)), final_learning_rate=float(opt.final_learning_rate) * learning_rate / float(opt.learning_rate),
        weight_decay=float(opt.weight_decay), beta_1=float(opt.beta_1), beta_2=float(opt.beta_2),
        epsilon=float(opt.epsilon), global_clipnorm=opt.global_clipnorm,
    )
    pretrainer.compile(optimizer=optimizer)

    backup_dir = workdir / "backup"
    done = completed_epochs(backup_dir)
    start_step = done * steps_per_epoch
    if done:
        print(f"resuming after epoch {done} (optimizer step {start_step}) from {backup_dir}", flush=True)

    from vlbeit_keras.data.pipeline import PretrainingInputConfig
    from vlbeit_keras.data.pipeline import make_pretraining_dataset

    data = config.data
    active = {objective.stream for objective in pretrainer.objectives.values()}
    for stream, key in (("text", "text_batch_size"), ("image", "image_batch_size"),
                        ("image_text", "pair_batch_size")):
        if stream in active:
            check_batch_divisible(int(data[key]), dist["distribution"], what=f"data.{key}")
    input_config = PretrainingInputConfig.from_backbone(
        backbone,
        text_length=int(data.text_length) if data.text_length else min(128, backbone.relative_text_length),
        text_batch_size=int(data.text_batch_size) if "text" in active else 0,
        image_batch_size=int(data.image_batch_size) if "image" in active else 0,
        pair_batch_size=int(data.pair_batch_size) if "image_text" in active else 0,
        image_mask_ratio=float(data.image_mask_ratio),
        mlm_probability=float(data.mlm_probability),
        mvlm_text_probability=float(data.mvlm_text_probability),
        seed=int(config.seed),
    )
    dataset = make_pretraining_dataset(
        input_config, tokenizer,
        text_records=streams["text"], image_records=streams["image"], pair_records=streams["image_text"],
        start_step=start_step, report=reports[0] if reports else None,
        num_shards=dist["num_shards"], shard_index=dist["shard_index"],
    )

    monitor = monitor_from_config(config.get("health"), pretrainer, dataset,
                                  log_dir=str(workdir / "tensorboard" / "health"))
    callbacks = [
        # First: a non-finite loss stops the run before any callback saves it.
        *([monitor] if monitor is not None else []),
        RandomStateBackup(backup_dir),  # before BackupAndRestore (see its docstring)
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(workdir / "tensorboard"), update_freq=int(sched.log_every)),
        StepLogger(workdir / "metrics.jsonl"),
    ]
    if config.debug.kill_after_steps:
        callbacks.append(StopAfterSteps(config.debug.kill_after_steps))
    pretrainer.fit(
        dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=callbacks, verbose=int(config.verbose),
    )

    backbone.save(workdir / "backbone.keras")
    backbone.save_weights(workdir / "backbone.weights.h5")
    backbone.save_to_preset(str(workdir / "preset"))
    tokenizer.save_to_preset(str(workdir / "preset"))
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    summary = {
        "steps": int(keras.ops.convert_to_numpy(pretrainer.optimizer.iterations)),
        "total_steps": total_steps,
        "first_epoch": rows[0] if rows else None,
        "last_epoch": rows[-1] if rows else None,
        "seconds_this_run": round(time.time() - start, 1),
        "workdir": str(workdir),
        "skipped_records": sum(r.count for r in reports),
        "distribution": dist_config.get("kind") or "none",
        "num_devices": dist["num_devices"],
        "process_index": dist["process_index"],
        "process_count": dist["process_count"],
        "health": monitor.summary() if monitor is not None else None,
    }
    with open(workdir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    for report in reports:
        if report.count:
            print(report.summary())
    return summary
