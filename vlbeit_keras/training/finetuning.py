"""The fine-tuning run behind ``recipes/finetune.py`` and ``recipes/evaluate.py``.

:func:`run_finetuning` drives any registered task (``TaskSpec``, plugins
included) from a config (``recipes/configs/finetune.py``, docs/finetuning.md):

1. training and evaluation records from registered data sources, optionally
   split by a key (DAQUAR: by image, 80/20), or the task's demo data when no
   source is configured (:func:`demo_task_data`);
2. the backbone: a pretraining checkpoint (keras-hub preset directory with
   its tokenizer, or a ``.keras`` backbone) moved into the fine-tuning
   configuration with :func:`vlbeit_keras.utils.resize.load_backbone_weights_resized`
   (image size, text length), the checkpoint's architecture with fresh
   weights (``model.load_weights=False``), or a preset from scratch;
3. the task model (``spec.build_model``; NLVR2 adds its third modality row
   with :func:`~vlbeit_keras.utils.resize.rebuild_backbone`), AdamW with
   warm-up + cosine decay, head and layer-wise lr multipliers;
4. ``model.fit`` on the task's resumable tf.data pipeline with
   ``BackupAndRestore`` + :class:`RandomStateBackup` (killed and restarted,
   a run continues from its last checkpoint, bit-exact), TensorBoard and a
   JSON-lines metrics log;
5. evaluation with the official metric, the trivial baseline next to it
   (``spec.baseline``), predictions in the benchmark's format and the
   fine-tuned model as ``.keras``.

:func:`run_evaluation` scores a saved fine-tuned model the same way.
"""

import json
import os
import pathlib
import time
import warnings

import keras
import numpy as np

import vlbeit_keras
from vlbeit_keras.training.callbacks import RandomStateBackup
from vlbeit_keras.training.callbacks import StepLogger
from vlbeit_keras.training.callbacks import StopAfterSteps
from vlbeit_keras.training.callbacks import completed_epochs
from vlbeit_keras.training.health import monitor_from_config
from vlbeit_keras.training.schedule import plan_epochs

MODEL_FILE = "model.keras"
VOCABULARY_FILE = "vocab.txt"
METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------- data
def demo_task_data(task, train_examples=2000, eval_examples=500, image_size=64, seed=0):
    """Training and evaluation records of the embedded demo corpus for a task.

    ============================  =================================================
    task                          demo records
    ============================  =================================================
    ``vqa``                       ``demo_records("vqa")``: 7 question types; answer
                                  vocabulary ``demo_answer_vocabulary()``
    ``nlvr2``                     ``demo_records("nlvr2")``: statements over pairs
    ``nlvr``                      ``demo_records("nlvr")``: statements over one
                                  image, one image per example (``"i-0"``,
                                  ``images_per_example=1``)
    ``image_text_classification`` the ``nlvr`` statements, labels 0/1
    ``retrieval``                 ``demo_records("captions")``: 3 captions per image
    ``image_classification``      ``demo_records("images")``, label = number of
                                  shapes - 1 (4 classes)
    other (plugins)               ``spec.example`` records (random pixels)
    ============================  =================================================

    Training records are the ``"train"`` split, evaluation records the
    ``"test"`` split (different seeds, so no scene is shared).

    Args:
        task: registered task name.
        train_examples, eval_examples: int, demo examples (images for
            captions) of each split.
        image_size: int or (height, width) of the rendered scenes.
        seed: demo corpus seed.

    Returns:
        (train_records, eval_records, task_overrides): ``task_overrides``
        are task config fields the records need (answer vocabulary, number of
        classes; for ``nlvr`` the backbone's image size instead of 96 x 400).
        The pipeline resizes the rendered scenes to the model's image size.

    Raises:
        ValueError: a plugin task without ``example``.
    """
    from vlbeit_keras.data import demo_corpus
    from vlbeit_keras.data.image_preprocessing import image_size_pair

    size = image_size_pair(image_size)
    spec = vlbeit_keras.get_registry("heads").get(task)
    overrides = {}

    def records(kind, split, n):
        return demo_corpus.demo_records(kind, n, seed=seed, image_size=size, split=split)

    def both(kind):
        return records(kind, "train", train_examples), records(kind, "test", eval_examples)

    if task == "vqa":
        train, test = both("vqa")
        overrides["answer_vocabulary"] = demo_corpus.demo_answer_vocabulary()
    elif task == "nlvr2":
        train, test = both("nlvr2")
    elif task == "nlvr":
        train, test = (
            [dict(r, identifier=f"{i}-0", image_index=0) for i, r in enumerate(part)]
            for part in both("nlvr")
        )
        # The backbone's image size, not NLVR's 96x400 (the pipeline resizes).
        overrides.update(images_per_example=1, split="demo", image_size=None)
    elif task == "image_text_classification":
        train, test = both("nlvr")
        overrides["num_classes"] = 2
    elif task == "retrieval":
        train, test = both("captions")
    elif task == "image_classification":
        train, test = (
            [dict(r, label=len(r["scene"]) - 1) for r in part] for part in both("images")
        )
        overrides["num_classes"] = demo_corpus.MAX_OBJECTS
    else:
        if spec.example is None:
            raise ValueError(
                f"Task {task!r} has no demo data and no `example` records; give "
                "data.train / data.eval sources."
            )
        train, example_overrides = spec.example(train_examples, size, seed)
        test, _ = spec.example(eval_examples, size, seed + 1)
        overrides.update(example_overrides)
    return train, test, overrides


def read_sources(sources, report=None):
    """Concatenated records of ``[{"reader": name, "kwargs": {...}}, ...]``.

    Readers are looked up in the ``datasets`` registry (plugins included).
    ``report`` (a ``SkipReport``) is passed to readers that take one.

    Raises:
        UnknownNameError: unknown reader name.
    """
    import inspect

    registry = vlbeit_keras.get_registry("datasets")
    records = []
    for source in sources:
        reader = registry.get(source["reader"])
        kwargs = dict(source.get("kwargs", {}))
        if report is not None and "report" in inspect.signature(reader).parameters:
            kwargs.setdefault("report", report)
        records.extend(reader(**kwargs))
    return records


def load_task_data(config, task):
    """Training and evaluation records of a run (see ``recipes/configs/finetune.py``).

    Returns:
        (train_records, eval_records, task_overrides, report): overrides come
        from the demo data (empty for configured sources); ``report`` is the
        ``SkipReport`` the readers and pipelines count skipped records in.

    Raises:
        ValueError: a split without its parts, or no evaluation records.
    """
    from vlbeit_keras.data.readers import SkipReport
    from vlbeit_keras.data.readers import split_records

    data = config.data
    report = SkipReport()
    overrides = {}
    if not data.train:
        demo = data.demo
        train, evaluation, overrides = demo_task_data(
            task, int(demo.train_examples), int(demo.eval_examples), demo.image_size,
            seed=int(config.seed),
        )
    else:
        train = read_sources(data.train, report)
        evaluation = read_sources(data.eval, report) if data.eval else []
        split = dict(data.split or {})
        if split:
            parts = split_records(train, dict(split["sizes"]), key=split.get("key", "image_id"),
                                  seed=int(split.get("seed", 0)))
            for role in ("train", "eval"):
                if split.get(role) not in parts:
                    raise ValueError(
                        f"data.split.{role}={split.get(role)!r} is not one of the split's parts "
                        f"{sorted(parts)}."
                    )
            train, evaluation = parts[split["train"]], parts[split["eval"]]
    if data.max_train_records:
        train = train[: int(data.max_train_records)]
    if data.max_eval_records:
        evaluation = evaluation[: int(data.max_eval_records)]
    if not train:
        raise ValueError("No training records (check data.train and data.split).")
    return train, evaluation, overrides, report


def prepare_task_config(spec, config, train_records, overrides=()):
    """The task config: ``spec.default_config`` < data overrides < ``config.task_config``.

    Fields the records determine are filled in when left None: the VQA answer
    vocabulary (built from the training answers, ``data.answer_min_count``)
    and the number of classes of classification tasks.

    Raises:
        ValueError: unknown task config fields.
    """
    from vlbeit_keras.tasks import vqa

    # A config value equal to the task default counts as unset, so that the
    # recipe can list every field (for command-line overrides) without
    # hiding the data's overrides (e.g. the demo image size).
    given = {k: v for k, v in _plain(config.task_config).items()
             if k not in spec.default_config or _plain(v) != _plain(spec.default_config[k])}
    task_config = spec.config(**{**dict(overrides), **given})
    if "answer_vocabulary" in task_config and task_config.get("answer_vocabulary") is None \
            and task_config.get("num_answers") is None:
        task_config["answer_vocabulary"] = vqa.build_answer_vocabulary(
            [r["answers"] for r in train_records], min_count=int(config.data.answer_min_count))
    if "num_classes" in task_config and task_config.get("num_classes") is None:
        labels = {int(r["label"]) for r in train_records}
        task_config["num_classes"] = max(labels) + 1
    return task_config


def _plain(value):
    """Plain dicts and lists (Config sections and tuples converted)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------- checkpoints
def load_checkpoint(path):
    """A backbone and its tokenizer from a pretraining checkpoint.

    Args:
        path: a keras-hub preset directory (``config.json`` +
            ``model.weights.h5``, and ``tokenizer.json`` + assets when the
            pretraining recipe wrote it), or a ``.keras`` file holding a
            ``VLBEiTBackbone`` or a fine-tuned task model (its backbone is
            used). A ``vocab.txt`` next to a ``.keras`` file is its tokenizer.

    Returns:
        (backbone, tokenizer or None).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TypeError: the ``.keras`` file holds something else.
    """
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer
    from vlbeit_keras.tasks.base import VLBEiTTaskModel

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist. Give a preset directory (e.g. the "
            "pretraining recipe's <workdir>/preset) or a backbone .keras file, or "
            "--checkpoint none for random initialisation."
        )
    if path.is_dir():
        backbone = vlbeit_keras.VLBEiTBackbone.from_preset(str(path), load_weights=True)
        tokenizer = None
        if (path / "tokenizer.json").exists():
            tokenizer = VLBEiTTokenizer.from_preset(str(path))
        return backbone, tokenizer
    obj = keras.saving.load_model(path, compile=False)
    if isinstance(obj, VLBEiTTaskModel):
        obj = obj.backbone
    if not isinstance(obj, vlbeit_keras.VLBEiTBackbone):
        raise TypeError(f"{path} holds a {type(obj).__name__}, not a VLBEiTBackbone or task model.")
    vocabulary = path.parent / VOCABULARY_FILE
    tokenizer = VLBEiTTokenizer.from_vocabulary_file(str(vocabulary)) if vocabulary.exists() else None
    return obj, tokenizer


def build_tokenizer(config, checkpoint_tokenizer, train_records, workdir, demo):
    """The run's text tokenizer, saved as ``<workdir>/vocab.txt``.

    ``config.type``: ``"auto"`` (the checkpoint's tokenizer when it has one,
    else ``"demo"`` on demo data, else ``"train"``), ``"checkpoint"``,
    ``"demo"``, ``"file"`` (``vocabulary_file``) or ``"train"`` (WordPiece
    with ``vocabulary_size`` entries on the training texts). A resumed run
    reuses ``<workdir>/vocab.txt``.

    Raises:
        ValueError: ``"checkpoint"`` without a checkpoint tokenizer, or an
            unknown type.
    """
    from vlbeit_keras.config import Config
    from vlbeit_keras.training.pretraining import build_text_tokenizer

    kind = config.type
    if kind == "auto":
        kind = "checkpoint" if checkpoint_tokenizer is not None else ("demo" if demo else "train")
    if kind == "checkpoint":
        if checkpoint_tokenizer is None:
            raise ValueError("tokenizer.type='checkpoint' but the checkpoint has no tokenizer.")
        checkpoint_tokenizer.save_vocabulary(str(pathlib.Path(workdir) / VOCABULARY_FILE))
        return checkpoint_tokenizer
    texts = [r["text"] for r in train_records if isinstance(r.get("text"), str)]
    return build_text_tokenizer(Config(dict(config, type=kind)), texts, workdir)


def build_backbone(config, tokenizer, checkpoint=None):
    """The backbone to fine-tune.

    With a checkpoint backbone, ``model.overrides`` (image size, text length,
    drop path) define the target configuration and the weights are moved
    with :func:`~vlbeit_keras.utils.resize.load_backbone_weights_resized`
    (``model.load_weights=False``: target configuration with fresh weights).
    Without, ``model.preset`` with the overrides and the tokenizer's
    vocabulary size, randomly initialised.

    Raises:
        ValueError: the tokenizer has more ids than the backbone's vocabulary.
    """
    from vlbeit_keras.utils.resize import load_backbone_weights_resized

    overrides = {k: v for k, v in _plain(config.overrides).items() if v is not None}
    if "image_size" in overrides and not isinstance(overrides["image_size"], int):
        overrides["image_size"] = list(overrides["image_size"])
    if checkpoint is not None:
        target_config = {**checkpoint.get_config(), **overrides}
        target_config.pop("name", None)
        backbone = vlbeit_keras.VLBEiTBackbone.from_config(target_config)
        if config.load_weights:
            load_backbone_weights_resized(checkpoint, backbone)
    else:
        overrides.setdefault("vocabulary_size", int(tokenizer.vocabulary_size()))
        backbone = vlbeit_keras.VLBEiTBackbone.from_preset(config.preset, load_weights=False, **overrides)
    if tokenizer.vocabulary_size() > backbone.vocabulary_size:
        raise ValueError(
            f"The tokenizer has {tokenizer.vocabulary_size()} ids but the backbone's "
            f"vocabulary has {backbone.vocabulary_size}; use the checkpoint's tokenizer."
        )
    return backbone


def build_optimizer(model, config, total_steps):
    """AdamW (:func:`~vlbeit_keras.tasks.optimization.finetune_optimizer`)
    with warm-up + cosine decay; None fields take the task model's defaults."""
    from vlbeit_keras.optimizers import warmup_cosine_schedule
    from vlbeit_keras.tasks.optimization import finetune_optimizer

    opt = config

    def pick(value, *defaults):
        if value is not None:
            return value
        return next((d for d in defaults if d is not None), None)

    peak = float(pick(opt.learning_rate, getattr(model, "default_learning_rate", None),
                      getattr(model, "learning_rate", None), 3e-5))
    schedule = warmup_cosine_schedule(
        peak, total_steps, warmup_steps=int(round(float(opt.warmup_fraction) * total_steps)),
        final_learning_rate=float(opt.final_learning_rate),
    )
    return finetune_optimizer(
        model,
        learning_rate=schedule,
        weight_decay=float(pick(opt.weight_decay, getattr(model, "weight_decay", None), 0.01)),
        head_multiplier=float(pick(opt.head_multiplier,
                                   getattr(model, "default_head_lr_multiplier", None), 1.0)),
        layer_decay=pick(opt.layer_decay, getattr(model, "layer_decay", None)),
        beta_1=float(opt.beta_1), beta_2=float(opt.beta_2), epsilon=float(opt.epsilon),
        global_clipnorm=opt.global_clipnorm,
    )


def image_config_for(model, data, training):
    """``ImagePreprocessingConfig`` at the model's image size."""
    from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig

    return ImagePreprocessingConfig(
        tuple(model.backbone.image_size), resize_mode=data.resize_mode,
        augment=bool(data.augment) and training,
    )


# --------------------------------------------------------------- evaluation
def evaluate_and_export(spec, model, records, tokenizer, task_config, data, outdir, report=None):
    """Score ``records`` and write the predictions file (``spec.prediction_file``).

    Returns:
        (metrics dict, predictions path).
    """
    metrics, predictions = spec.evaluate(
        model, records, tokenizer=tokenizer, image_config=image_config_for(model, data, False),
        batch_size=int(data.eval_batch_size), report=report, **task_config,
    )
    path = pathlib.Path(outdir) / spec.prediction_file
    spec.export_predictions(predictions, str(path))
    return _numbers(metrics), path


def _numbers(metrics):
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        out[key] = value
    return out


def format_metrics(metrics, baseline=None):
    """Text table ``metric | model | baseline``; fractions in %.

    Rows: the numeric metrics (``*_seconds`` and counts after a blank line);
    baseline entries that are not metrics (the majority answer, label or
    class id) in the header.
    """
    baseline = baseline or {}
    notes = {k: v for k, v in baseline.items()
             if k not in metrics and (isinstance(v, str) or isinstance(v, int) and not isinstance(v, bool))}
    header = f"{'metric':<16}{'model':>10}{'baseline':>10}"
    if notes:
        header += "   (baseline predicts " + ", ".join(f"{k} {v!r}" for k, v in notes.items()) + ")"
    lines, counts = [header], []
    for key, value in metrics.items():
        base = baseline.get(key)
        if isinstance(value, float) and not key.endswith("_seconds"):
            lines.append(f"{key:<16}{100 * value:>9.2f}%"
                         + (f"{100 * base:>9.2f}%" if isinstance(base, float) else ""))
        elif isinstance(value, (int, float)):
            counts.append(f"{key}={value}")
    if counts:
        lines.append(", ".join(counts))
    return "\n".join(lines)


def compute_baseline(spec, train_records, eval_records, task_config):
    """``spec.baseline(...)`` or None when the task defines none."""
    if spec.baseline is None or not eval_records:
        return None
    return _numbers(spec.baseline(train_records, eval_records, **task_config))


# --------------------------------------------------------------------- run
def run_finetuning(config):
    """Run (or resume) one fine-tuning job described by ``config``.

    Args:
        config: :class:`~vlbeit_keras.config.Config` with ``task``,
            ``checkpoint``, ``model``, ``tokenizer``, ``task_config``,
            ``data``, ``optimizer``, ``schedule``, ``workdir``, ``seed``,
            ``mixed_precision``, ``verbose``, ``debug`` (see
            ``recipes/configs/finetune.py``).

    Returns:
        dict summary: task, steps, first/last epoch training metrics,
        evaluation ``metrics``, ``baseline``, paths, seconds.

    Outputs in ``workdir``: ``config.json`` (resolved, task config
    included), ``vocab.txt``, ``backup/`` (resume state), ``tensorboard/``,
    ``metrics.jsonl`` (per epoch), ``model.keras``, the predictions file,
    ``metrics.json`` (evaluation + baseline) and ``summary.json``.
    """
    start = time.time()
    epochs, steps_per_epoch = plan_epochs(config.schedule)
    spec = vlbeit_keras.get_registry("heads").get(config.task)
    workdir = pathlib.Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(int(config.seed))
    if config.mixed_precision:
        keras.config.set_dtype_policy(config.mixed_precision)
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")

    train_records, eval_records, overrides, report = load_task_data(config, config.task)
    print(f"task {config.task}: {len(train_records)} training records, "
          f"{len(eval_records)} evaluation records"
          + ("" if config.data.train else " (demo corpus)"), flush=True)

    checkpoint, checkpoint_tokenizer = (None, None)
    if config.checkpoint:
        checkpoint, checkpoint_tokenizer = load_checkpoint(config.checkpoint)
    tokenizer = build_tokenizer(config.tokenizer, checkpoint_tokenizer, train_records, workdir,
                                demo=not config.data.train)
    backbone = build_backbone(config.model, tokenizer, checkpoint)
    init = ("checkpoint " + str(config.checkpoint)) if checkpoint is not None and config.model.load_weights \
        else "random initialisation"
    task_config = prepare_task_config(spec, config, train_records, overrides)
    model = spec.build_model(backbone, **task_config)
    print(f"backbone: {backbone.count_params():,} parameters, image {tuple(model.backbone.image_size)}, "
          f"text {model.backbone.max_text_length}, vocabulary {tokenizer.vocabulary_size()}; {init}",
          flush=True)
    resolved = config.to_dict()
    resolved["task_config"] = _plain(task_config)
    with open(workdir / "config.json", "w") as f:
        json.dump(resolved, f, indent=2, default=str)

    sched = config.schedule
    total_steps = epochs * steps_per_epoch
    model.compile(optimizer=build_optimizer(model, config.optimizer, total_steps))

    backup_dir = workdir / "backup"
    done = completed_epochs(backup_dir)
    start_step = done * steps_per_epoch
    if done:
        print(f"resuming after epoch {done} (optimizer step {start_step}) from {backup_dir}", flush=True)
    dataset = spec.make_dataset(
        train_records, tokenizer=tokenizer, image_config=image_config_for(model, config.data, True),
        text_length=model.backbone.max_text_length, batch_size=int(config.data.batch_size),
        training=True, seed=int(config.seed), start_step=start_step, report=report, **task_config,
    )
    monitor = monitor_from_config(config.get("health"), model, dataset,
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
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              verbose=int(config.verbose))
    train_seconds = round(time.time() - start, 1)
    model.save(workdir / MODEL_FILE)

    metrics, baseline, predictions = None, None, None
    if eval_records:
        t0 = time.time()
        metrics, predictions = evaluate_and_export(spec, model, eval_records, tokenizer, task_config,
                                                   config.data, workdir, report)
        metrics["eval_seconds"] = round(time.time() - t0, 1)
        baseline = compute_baseline(spec, train_records, eval_records, task_config)
        with open(workdir / METRICS_FILE, "w") as f:
            json.dump({"task": config.task, "metrics": metrics, "baseline": baseline}, f, indent=2)
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")] \
        if (workdir / "metrics.jsonl").exists() else []
    summary = {
        "task": config.task,
        "init": init,
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "total_steps": total_steps,
        "train_records": len(train_records),
        "eval_records": len(eval_records),
        "first_epoch": rows[0] if rows else None,
        "last_epoch": rows[-1] if rows else None,
        "metrics": metrics,
        "baseline": baseline,
        "predictions": str(predictions) if predictions else None,
        "model": str(workdir / MODEL_FILE),
        "seconds_this_run": round(time.time() - start, 1),
        "train_seconds_this_run": train_seconds,
        "workdir": str(workdir),
        "skipped_records": report.count,
        "health": monitor.summary() if monitor is not None else None,
    }
    with open(workdir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if report.count:
        print(report.summary())
    return summary


def load_finetuned(model_path, tokenizer_path=None):
    """A fine-tuned task model and its tokenizer.

    Args:
        model_path: ``.keras`` file written by :func:`run_finetuning`.
        tokenizer_path: a ``vocab.txt`` or a preset directory with a
            tokenizer; default: ``vocab.txt`` next to the model.

    Raises:
        FileNotFoundError: model or tokenizer not found.
    """
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer

    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Model file {model_path} does not exist.")
    model = keras.saving.load_model(model_path)
    path = pathlib.Path(tokenizer_path) if tokenizer_path else model_path.parent / VOCABULARY_FILE
    if path.is_dir():
        tokenizer = VLBEiTTokenizer.from_preset(str(path))
    elif path.is_file():
        tokenizer = VLBEiTTokenizer.from_vocabulary_file(str(path))
    else:
        raise FileNotFoundError(
            f"No tokenizer at {path}; pass --tokenizer (a vocab.txt or a preset directory)."
        )
    return model, tokenizer


def run_evaluation(config, model_path, tokenizer_path=None, output_dir=None):
    """Evaluate a fine-tuned model on the run's evaluation records.

    Args:
        config: a fine-tuning config (data sources and task config; the
            ``config.json`` a fine-tuning run wrote, or a config variant).
        model_path: the fine-tuned ``.keras`` model.
        tokenizer_path: see :func:`load_finetuned`.
        output_dir: where the predictions and ``metrics.json`` go (default:
            the model's folder).

    Returns:
        dict: ``task``, ``metrics``, ``baseline``, ``predictions`` path.

    Raises:
        TypeError: the model is not the task's model class.
        ValueError: no evaluation records.
    """
    spec = vlbeit_keras.get_registry("heads").get(config.task)
    model, tokenizer = load_finetuned(model_path, tokenizer_path)
    if not isinstance(model, spec.model_cls):
        raise TypeError(
            f"{model_path} holds a {type(model).__name__}; task {config.task!r} needs a "
            f"{spec.model_cls.__name__}."
        )
    train_records, eval_records, overrides, report = load_task_data(config, config.task)
    if not eval_records:
        raise ValueError("No evaluation records (check data.eval and data.split).")
    task_config = prepare_task_config(spec, config, train_records, overrides)
    outdir = pathlib.Path(output_dir) if output_dir else pathlib.Path(model_path).parent
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    metrics, predictions = evaluate_and_export(spec, model, eval_records, tokenizer, task_config,
                                               config.data, outdir, report)
    metrics["eval_seconds"] = round(time.time() - t0, 1)
    baseline = compute_baseline(spec, train_records, eval_records, task_config)
    result = {"task": config.task, "metrics": metrics, "baseline": baseline,
              "predictions": str(predictions)}
    with open(outdir / METRICS_FILE, "w") as f:
        json.dump({"task": config.task, "metrics": metrics, "baseline": baseline}, f, indent=2)
    if report.count:
        print(report.summary())
    return result


__all__ = [
    "build_backbone",
    "build_optimizer",
    "build_tokenizer",
    "demo_task_data",
    "evaluate_and_export",
    "format_metrics",
    "load_checkpoint",
    "load_finetuned",
    "load_task_data",
    "prepare_task_config",
    "read_sources",
    "run_evaluation",
    "run_finetuning",
]
