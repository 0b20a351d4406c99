"""Fine-tuning configs (big_vision style): ``get_config("<task>[,<variant>][,smoke]")``.

``recipes/finetune.py --task vqa --config recipes/configs/finetune.py:daquar``
calls ``get_config("vqa,daquar")``. Variants:

    demo          (default) the embedded demo corpus for the task (no files needed),
                  vlbeit_small from random initialisation; minutes on 2 CPU cores.
    nlvr1         task nlvr: train on ../shared/data/nlvr1/hidden, evaluate on dev;
                  checkpoint runs/pretrain_nlvr/preset (96x400 images, text 32).
    daquar        task vqa: ../shared/data/daquar_subset split by image 80/20
                  (deterministic, seed 0); checkpoint runs/pretrain_coco/preset (128 px).
    coco_flickr8k task retrieval: fine-tune on ../shared/data/coco_mini_captions,
                  evaluate on ../shared/data/flickr8k_test1k_224 (1,000 images,
                  5,000 captions); checkpoint runs/pretrain_coco/preset.

Add ``,smoke`` for a seconds-long run of the same code path (tests, debugging).
Any field can be overridden on the command line (``schedule.total_steps=300``,
``optimizer.learning_rate=1e-4``, ``task_config.rerank_k=8``); ``task_config``
holds the task's own fields (``TaskSpec.default_config``), filled in by the
recipe. The random-initialisation comparison of a real variant is the same
command with ``model.load_weights=false``: the checkpoint's architecture and
tokenizer, fresh weights, identical fine-tuning settings.
"""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("VLBEIT_SHARED_DIR", REPO.parent / "shared"))

VARIANTS = ("demo", "nlvr1", "daquar", "coco_flickr8k")
# The task each real-data variant is made for.
VARIANT_TASKS = {"nlvr1": "nlvr", "daquar": "vqa", "coco_flickr8k": "retrieval"}


def _base(task):
    return dict(
        task=task,
        seed=0,
        workdir=f"runs/finetune_{task}_demo",
        verbose=1,  # Keras progress bar (2: one line per epoch)
        mixed_precision="",
        # A keras-hub preset directory (backbone config + weights + tokenizer, as
        # written by recipes/pretrain.py in <workdir>/preset), a backbone (or task
        # model) .keras file, or "" for random initialisation from model.preset.
        checkpoint="",
        model=dict(
            preset="vlbeit_small",  # architecture when there is no checkpoint
            # False: build the checkpoint's architecture with fresh weights (the
            # random-initialisation baseline with the checkpoint's tokenizer).
            load_weights=True,
            # Backbone config changes (None: keep the checkpoint's / preset's);
            # with a checkpoint, image_size / max_text_length changes go through
            # load_backbone_weights_resized. Other backbone fields may be added.
            # Drop path 0.1 as VLMo fine-tuning of the base model. None keeps the
            # checkpoint's / preset's value (so layerscale_init cannot be
            # switched off from here; pooling: "cls", "mean" or "text_mean").
            overrides=dict(image_size=None, max_text_length=None, drop_path_rate=0.1,
                           pooling=None, layerscale_init=None, initializer_range=None),
        ),
        # auto: the checkpoint's tokenizer if it has one, else the demo vocabulary
        # on demo data, else WordPiece trained on the training texts.
        tokenizer=dict(type="auto", vocabulary_file="", vocabulary_size=2000),
        task_config=dict(),  # the task's fields, defaults from its TaskSpec
        data=dict(
            # Lists of {"reader": registered dataset name, "kwargs": {...}}.
            # No train sources: the task's demo data (demo settings below).
            train=[],
            eval=[],
            # Optional grouped split of the training sources (DAQUAR ships none):
            # {"key": "image_id", "sizes": {"train": 0.8, "test": 0.2}, "seed": 0,
            #  "train": "train", "eval": "test"}.
            split=dict(),
            # 8,000 synthetic examples: with 2,000 the statement tasks memorise
            # (docs/training_health.md); the demo corpus costs nothing to grow.
            demo=dict(train_examples=8000, eval_examples=500, image_size=64),
            max_train_records=0,  # 0: all (smoke runs use a few)
            max_eval_records=0,
            batch_size=32,
            eval_batch_size=64,
            # Random resized crop + flip; off by default: the demo and NLVR
            # sentences talk about counts and positions that crops can change.
            augment=False,
            resize_mode="squash",
            answer_min_count=1,  # VQA: answers kept in the vocabulary built from training
        ),
        optimizer=dict(
            # None: the task model's default (VLMo values for base models:
            # lr 3e-5 VQA / retrieval, 5e-5 NLVR; head x20 for VQA; wd 0.01;
            # layer decay 0.65 for image classification).
            learning_rate=None,
            head_multiplier=None,
            layer_decay=None,
            weight_decay=None,
            warmup_fraction=0.1,  # VLMo: linear warm-up over 10% of the steps
            final_learning_rate=0.0,  # then cosine decay to this value
            beta_1=0.9,
            beta_2=0.98,
            epsilon=1e-8,
            global_clipnorm=None,
        ),
        schedule=dict(total_steps=1000, checkpoint_every=100, log_every=10),
        # Training-health monitor (vlbeit_keras.training.health, docs/training_health.md):
        # warns when a loss stays at its chance value for `patience_steps`, when a
        # pooled feature collapses (spread < `collapse_threshold` on a probe batch),
        # when a layer group's gradient norm explodes or vanishes; stops the run on
        # a non-finite loss before it is checkpointed. Probes every `probe_every` steps.
        health=dict(enabled=True, probe_every=100, patience_steps=200, chance_tolerance=0.02,
                    collapse_threshold=0.02, gradients=True),
        debug=dict(kill_after_steps=0),
    )


def _demo(config, task):
    # One recipe for every task: vlbeit_small (mean pooling, fan-in
    # initialisation: docs/training_health.md), AdamW lr 1e-3 (tiny models
    # from scratch learn at a much higher lr than the base model's fine-tuning
    # lr), heads at the same lr, wd 0.01, 10 % warm-up, drop path 0.1. Only the
    # step budget differs: 1,200 steps, 2,400 for the two-pass NLVR2, 800 for
    # retrieval (three passes per step), 600 for the vision-only classifier.
    config["optimizer"].update(learning_rate=1e-3, head_multiplier=1.0, weight_decay=0.01)
    steps = {"nlvr2": 2400, "retrieval": 800, "image_classification": 600}
    config["schedule"] = dict(total_steps=steps.get(task, 1200), checkpoint_every=100, log_every=10)
    if task == "retrieval":
        config["data"]["demo"].update(train_examples=700, eval_examples=100)
        config["task_config"] = dict(rerank_k=16)
    if task == "image_classification":
        config["optimizer"].update(layer_decay=None, weight_decay=0.05)


def _nlvr1(config):
    root = SHARED / "data/nlvr1"
    config["workdir"] = "runs/finetune_nlvr1"
    config["checkpoint"] = "runs/pretrain_nlvr/preset"
    config["data"]["train"] = [dict(reader="nlvr", kwargs=dict(json_file=str(root / "hidden/hidden.json")))]
    config["data"]["eval"] = [dict(reader="nlvr", kwargs=dict(json_file=str(root / "dev/dev.json")))]
    config["task_config"] = dict(image_size=(96, 400), split="dev")
    # 5,910 training images: 184 steps of 32 per pass.
    config["optimizer"].update(learning_rate=3e-4, head_multiplier=1.0, weight_decay=0.01)
    config["schedule"] = dict(total_steps=552, checkpoint_every=92, log_every=23)


def _daquar(config):
    root = SHARED / "data/daquar_subset"
    config["workdir"] = "runs/finetune_daquar"
    config["checkpoint"] = "runs/pretrain_coco/preset"
    config["data"]["train"] = [dict(reader="daquar", kwargs=dict(
        qa_file=str(root / "all_qa_pairs.txt"), image_root=str(root / "images")))]
    # Split by image, 80% / 20%, deterministic (split_records, seed 0).
    config["data"]["split"] = dict(key="image_id", sizes={"train": 0.8, "test": 0.2}, seed=0,
                                   train="train", eval="test")
    config["data"]["answer_min_count"] = 1
    config["optimizer"].update(learning_rate=3e-4, head_multiplier=1.0, weight_decay=0.01)
    # ~770 training questions: 24 steps of 32 per pass, 20 passes.
    config["schedule"] = dict(total_steps=480, checkpoint_every=48, log_every=12)


def _coco_flickr8k(config):
    coco = SHARED / "data/coco_mini_captions"
    flickr = SHARED / "data/flickr8k_test1k_224"
    config["workdir"] = "runs/finetune_coco_flickr8k"
    config["checkpoint"] = "runs/pretrain_coco/preset"
    config["data"]["train"] = [
        dict(reader="coco_captions", kwargs=dict(
            annotation_file=str(coco / f"annotations/captions_{split}2017.json"),
            image_root=str(coco / f"{split}2017")))
        for split in ("train", "val")
    ]
    config["data"]["eval"] = [dict(reader="flickr8k", kwargs=dict(
        token_file=str(flickr / "Flickr8k.token.txt"), image_root=str(flickr / "images"),
        split_file=str(flickr / "Flickr_8k.testImages.txt")))]
    # ITM re-ranks the dual encoder's top 16 per query (1,000 x 16 + 5,000 x 16
    # fused passes at most); R@1/5 depend on it, R@10 partly.
    config["task_config"] = dict(rerank_k=16, negative_sampling_seed=0)
    config["optimizer"].update(learning_rate=3e-4, head_multiplier=1.0, weight_decay=0.01)
    # 1,195 captions: 37 steps of 32 per pass, ~16 passes.
    config["schedule"] = dict(total_steps=600, checkpoint_every=60, log_every=15)


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    if not parts:
        raise ValueError("get_config needs the task name first: 'vqa', 'vqa,daquar', 'nlvr,smoke', ...")
    task, rest = parts[0], parts[1:]
    smoke = "smoke" in rest
    variants = [p for p in rest if p != "smoke"]
    variant = variants[0] if variants else "demo"
    if variant not in VARIANTS or len(variants) > 1:
        raise ValueError(f"Unknown fine-tuning variant {','.join(variants)!r}; use one of {VARIANTS}.")
    if variant in VARIANT_TASKS and VARIANT_TASKS[variant] != task:
        raise ValueError(
            f"Variant {variant!r} is for task {VARIANT_TASKS[variant]!r}, not {task!r}."
        )
    config = _base(task)
    if variant == "demo":
        _demo(config, task)
    elif variant == "nlvr1":
        _nlvr1(config)
    elif variant == "daquar":
        _daquar(config)
    else:
        _coco_flickr8k(config)
    if variant != "demo":
        config["verbose"] = 2
    if smoke:
        # Same code path, seconds: tiny model, a few records, two short epochs.
        config["workdir"] += "_smoke"
        if variant == "demo":
            config["model"]["preset"] = "vlbeit_tiny"
            config["data"]["demo"].update(train_examples=24, eval_examples=12, image_size=32)
        else:
            config["data"].update(max_train_records=16, max_eval_records=12)
        config["data"].update(batch_size=4, eval_batch_size=8)
        config["schedule"] = dict(total_steps=4, checkpoint_every=2, log_every=1)
        config["task_config"] = dict(config["task_config"], **({"rerank_k": 3} if task == "retrieval" else {}))
    return config
