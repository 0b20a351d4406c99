"""Pretraining configs (big_vision style): ``get_config("<variant>[,smoke]")``.

Variants:
    demo        (default) the embedded synthetic corpus, vlbeit_small; no files needed.
                Finishes in minutes on 2 CPU cores with the JAX backend.
    nlvr        ../shared/data/nlvr1/hidden: images (MIM), sentences (MLM),
                images with their true sentences (MVLM).
    coco        ../shared/data/coco_mini_captions: photos and their captions.
    4m          COCO + Visual Genome + CC3M + SBU (VLMo's 4M-image set) at
                vlbeit_base / 224 px; paths under $VLBEIT_DATA (see docs/pretraining.md).
Add ``,smoke`` for a seconds-long run of the same code path (CI, debugging).
Any field can be overridden on the command line: ``schedule.total_steps=2000``.
"""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("VLBEIT_SHARED_DIR", REPO.parent / "shared"))
DATA = pathlib.Path(os.environ.get("VLBEIT_DATA", "data"))


def _base():
    return dict(
        seed=0,
        workdir="runs/pretrain",
        verbose=1,  # Keras progress bar
        mixed_precision="",  # e.g. "mixed_bfloat16" on accelerators (MODEL_SPEC §11)
        model=dict(
            preset="vlbeit_small",
            # Any registered expert kind, plugins included (`python -m vlbeit_keras
            # plugins`): "ffn" is VL-BEiT's; e.g. model.expert_type=swiglu (plugins/vlbeit-swiglu).
            expert_type="ffn",
            # Drop path 0.1 as VLMo/BEiT-3 pretraining (MODEL_SPEC §3.1).
            overrides=dict(drop_path_rate=0.1),
            # Gradient checkpointing of every MoME block: less activation memory
            # for ~1/3 more compute (docs/scaling.md has the measured trade-off).
            remat=False,
        ),
        # keras.distribution (JAX backend): "none", "data_parallel" (replicas on
        # every device) or "model_parallel" (attention/expert kernels split over
        # `model_parallel_size` devices, the rest of the mesh splits the batch).
        # multi_host: None = join a multi-host job when KERAS_DISTRIBUTION_* are
        # set, True = always (TPU pods, SLURM). Batch sizes are global.
        distribution=dict(kind="none", model_parallel_size=1, multi_host=None),
        # Total = MLM + MIM + MVLM_text + MVLM_image, equal weights (MODEL_SPEC §6.3).
        objectives=("mlm", "mim", "mvlm"),
        data=dict(
            sources=[],
            # Equal parts of texts, images and pairs per step (BEiT-3, MODEL_SPEC §6.4).
            text_batch_size=16,
            image_batch_size=16,
            pair_batch_size=16,
            text_length=0,  # 0: min(128, L0) (MODEL_SPEC §6.1)
            mlm_probability=0.15,  # BERT 15% with 80/10/10
            mvlm_text_probability=0.5,  # VL-BEiT: 50% of pair text
            image_mask_ratio=0.4,  # block-wise ~40% of patches (BEiT: 75/196)
        ),
        tokenizer=dict(type="train", vocabulary_file="", vocabulary_size=1000),
        visual_tokenizer=dict(
            type="kmeans",  # trained here: no DALL-E / VQ-KD weights can be downloaded
            path="",  # a tokenizer saved by recipes/train_visual_tokenizer.py
            codebook_size=256,  # 64-1024 for small data (MODEL_SPEC §7)
            pool_size=4,
            training=dict(max_images=2000, max_patches=100_000, iterations=15, seed=0,
                          resize_mode="squash"),
        ),
        optimizer=dict(
            # BEiT-3: AdamW (0.9, 0.98), eps 1e-6, wd 0.05, lr 1e-3 at batch 6144,
            # linear scaling with batch. Tiny models tolerate a much higher lr, so the
            # small-data variants switch scaling off and set the lr directly.
            learning_rate=1e-3,
            scale_with_batch=False,
            reference_batch_size=6144,
            final_learning_rate=1e-5,
            warmup_steps=100,
            weight_decay=0.05,
            beta_1=0.9,
            beta_2=0.98,
            epsilon=1e-6,
            global_clipnorm=3.0,  # BEiT pretraining clips at 3.0
        ),
        schedule=dict(total_steps=600, checkpoint_every=100, log_every=10),
        # Training-health monitor (vlbeit_keras.training.health, docs/training_health.md):
        # warns when a loss stays at its chance value for `patience_steps`, when a
        # pooled feature collapses (spread < `collapse_threshold` on a probe batch),
        # when a layer group's gradient norm explodes or vanishes; stops the run on
        # a non-finite loss before it is checkpointed. Probes every `probe_every` steps.
        health=dict(enabled=True, probe_every=100, patience_steps=200, chance_tolerance=0.02,
                    collapse_threshold=0.02, gradients=True),
        debug=dict(kill_after_steps=0),
    )


def _demo(config):
    config["workdir"] = "runs/pretrain_demo"
    config["tokenizer"] = dict(type="demo", vocabulary_file="", vocabulary_size=0)
    config["data"]["sources"] = [
        # 1,500 synthetic scenes with 3 captions each: pairs and images.
        dict(reader="demo", kwargs=dict(task="captions", num_examples=1500, image_size=64),
             streams=["image", "image_text"]),
        # Captions and NLVR-style statements as the text-only corpus.
        dict(reader="demo", kwargs=dict(task="text", num_examples=3000), streams=["text"]),
    ]
    config["data"]["text_length"] = 16
    config["optimizer"]["learning_rate"] = 1e-3
    # 2,400 steps: MVLM grounds the caption words in the image only after
    # ~1,000 steps (mvlm_text_accuracy 0.32 at 600, 0.79 at 2,400), and the
    # fine-tuning runs of docs/results.md start from this checkpoint.
    config["schedule"] = dict(total_steps=2400, checkpoint_every=100, log_every=10)


def _nlvr_source():
    return dict(reader="nlvr", kwargs=dict(json_file=str(SHARED / "data/nlvr1/hidden/hidden.json"),
                                           per_image=True),
                streams=["text", "image", "image_text"], pairs="true_only")


def _coco_sources():
    root = SHARED / "data/coco_mini_captions"
    return [dict(reader="coco_captions",
                 kwargs=dict(annotation_file=str(root / f"annotations/captions_{split}2017.json"),
                             image_root=str(root / f"{split}2017")),
                 streams=["text", "image", "image_text"])
            for split in ("train", "val")]


def _small_real(config, sources, workdir, image_size):
    config["workdir"] = workdir
    config["data"]["sources"] = sources
    config["data"]["text_length"] = 32
    config["model"]["overrides"].update(image_size=image_size, max_text_length=32, relative_text_length=40)
    config["tokenizer"] = dict(type="train", vocabulary_file="", vocabulary_size=2000)
    # Sized for a shared 2-core CPU (about 20-40 minutes); raise for better checkpoints.
    config["schedule"] = dict(total_steps=1200, checkpoint_every=200, log_every=20)


def _four_million(config):
    # COCO + VG + CC3M + SBU in the generic JSONL image-text format
    # (one {"image": path, "text": caption} per line), see docs/pretraining.md.
    config["workdir"] = "runs/pretrain_4m"
    config["model"].update(preset="vlbeit_base", overrides=dict(drop_path_rate=0.1), remat=False)
    config["data"]["sources"] = [
        dict(reader="image_text", kwargs=dict(path=str(DATA / f"{name}.jsonl"), image_root=str(DATA)),
             streams=["image", "image_text"])
        for name in ("coco_train", "vg", "cc3m", "sbu")
    ] + [dict(reader="text_corpus", kwargs=dict(paths=[str(DATA / "wiki_bookcorpus.txt")]),
              streams=["text"])]
    config["tokenizer"] = dict(type="file", vocabulary_file=str(DATA / "bert-base-uncased-vocab.txt"),
                               vocabulary_size=30522)
    config["visual_tokenizer"]["path"] = str(DATA / "visual_tokenizer_8192.keras")
    config["visual_tokenizer"]["codebook_size"] = 8192
    config["data"].update(text_batch_size=2048, image_batch_size=2048, pair_batch_size=2048,
                          text_length=128)
    config["optimizer"].update(scale_with_batch=True, warmup_steps=10_000)
    config["schedule"] = dict(total_steps=1_000_000, checkpoint_every=5_000, log_every=100)
    config["mixed_precision"] = "mixed_bfloat16"
    # Base on accelerators: replicas on every device, every host feeds its share.
    config["distribution"] = dict(kind="data_parallel", model_parallel_size=1, multi_host=None)


def get_config(arg=None):
    parts = [p for p in (arg or "demo").split(",") if p]
    smoke = "smoke" in parts
    variant = next((p for p in parts if p != "smoke"), "demo")
    config = _base()
    if variant == "demo":
        _demo(config)
    elif variant == "nlvr":
        # NLVR's 400x100 three-box images keep their aspect ratio: 96x400 -> a 6x25
        # grid (MODEL_SPEC §9.2), the size NLVR fine-tuning uses.
        _small_real(config, [_nlvr_source()], "runs/pretrain_nlvr", (96, 400))
    elif variant == "coco":
        # Photographs: square 128 px (8x8 grid) for VQA (DAQUAR) and retrieval.
        _small_real(config, _coco_sources(), "runs/pretrain_coco", (128, 128))
    elif variant == "4m":
        _four_million(config)
    else:
        raise ValueError(f"Unknown pretraining variant {variant!r}; use demo, nlvr, coco or 4m.")
    if smoke:
        # Same code path, seconds: tiny model and data, two short "epochs".
        config["workdir"] += "_smoke"
        config["model"]["preset"] = "vlbeit_tiny"
        config["model"]["overrides"] = dict(drop_path_rate=0.1)
        if variant == "demo":
            config["data"]["sources"][0]["kwargs"].update(num_examples=64, image_size=32)
            config["data"]["sources"][1]["kwargs"].update(num_examples=128)
        config["data"].update(text_batch_size=4, image_batch_size=4, pair_batch_size=4, text_length=8)
        config["visual_tokenizer"].update(codebook_size=16)
        config["visual_tokenizer"]["training"].update(max_images=64, max_patches=2000, iterations=3)
        if config["tokenizer"]["type"] == "train":
            config["tokenizer"]["vocabulary_size"] = 100
        config["model"]["overrides"].update(vocabulary_size=100) if config["tokenizer"]["type"] != "demo" else None
        config["optimizer"]["warmup_steps"] = 2
        config["schedule"] = dict(total_steps=6, checkpoint_every=3, log_every=1)
    return config
