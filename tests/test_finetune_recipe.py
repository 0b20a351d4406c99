"""recipes/finetune.py and recipes/evaluate.py: smoke runs per task, resume after
a kill, checkpoints from the pretraining recipe, the DAQUAR split, baselines."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import vlbeit_keras
from tests.conftest import REPO
from tests.helpers.fake_plugins import registered_task
from vlbeit_keras.training import finetuning

BUILT_INS = ("vqa", "nlvr2", "nlvr", "retrieval", "image_classification", "image_text_classification")
PREDICTION_FILES = {"vqa": "predictions.json", "nlvr2": "predictions.csv", "nlvr": "predictions.csv",
                    "retrieval": "predictions.json", "image_classification": "predictions.json",
                    "image_text_classification": "predictions.json"}


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


# --------------------------------------------------------------------- smoke
@pytest.mark.parametrize("task", BUILT_INS)
def test_smoke_finetune_then_evaluate(task, tmp_path):
    workdir = tmp_path / "run"
    summary = load_recipe("finetune").main(["--task", task, "--smoke", "--workdir", str(workdir), "verbose=0"])
    spec = vlbeit_keras.get_registry("heads").get(task)
    assert summary["steps"] == summary["total_steps"] == 4
    assert summary["init"] == "random initialisation"
    for name in ("model.keras", "vocab.txt", "metrics.json", "metrics.jsonl", "summary.json", "config.json",
                 PREDICTION_FILES[task]):
        assert (workdir / name).exists(), name
    assert spec.prediction_file == PREDICTION_FILES[task]
    assert any((workdir / "tensorboard").rglob("events.out.tfevents.*"))
    metrics, baseline = summary["metrics"], summary["baseline"]
    assert set(without_timing(metrics)) <= set(spec.metric_names)
    assert all(np.isfinite(v) for v in without_timing(metrics).values())
    # The baseline is scored with the same metric keys.
    assert set(without_timing(metrics)) <= set(baseline)

    out = tmp_path / "eval"
    # No --task: the run's config.json names it.
    result = load_recipe("evaluate").main(["--model", str(workdir / "model.keras"), "--output", str(out)])
    assert without_timing(result["metrics"]) == without_timing(metrics)
    assert result["baseline"] == baseline
    if task == "retrieval":
        # A run made before a task setting existed: the setting takes its
        # default and can be overridden.
        saved = json.loads((workdir / "config.json").read_text())
        del saved["task_config"]["rerank_score"]
        (workdir / "config.json").write_text(json.dumps(saved))
        again = load_recipe("evaluate").main(["--model", str(workdir / "model.keras"), "--output",
                                              str(tmp_path / "eval2"), "task_config.rerank_score=log_odds"])
        assert without_timing(again["metrics"]) == without_timing(metrics)
    written = (out / spec.prediction_file).read_bytes()
    assert written == (workdir / spec.prediction_file).read_bytes()
    if task == "vqa":
        rows = json.loads(written)
        assert set(rows[0]) == {"question_id", "answer"} and len(rows) == metrics["num_questions"]
    if task == "nlvr":
        lines = written.decode().splitlines()
        assert len(lines) == metrics["num_images"]
        assert all(line.endswith((",true", ",false")) and line.split(",")[0].endswith(".png") for line in lines)


def test_unknown_task_and_wrong_variant_fail_clearly():
    recipe = load_recipe("finetune")
    with pytest.raises(Exception, match="nlvr2"):  # the message lists the registered tasks
        recipe.build_config("nlvr3")
    with pytest.raises(ValueError, match="is for task 'nlvr'"):
        recipe.build_config("vqa", f"{recipe.DEFAULT_CONFIG}:nlvr1")
    with pytest.raises(ValueError, match="Unknown config field"):
        recipe.build_config("vqa", overrides=["task_config.answer_vocab=x"])
    config = recipe.build_config("retrieval", overrides=["task_config.rerank_k=5"], checkpoint="none")
    assert config.task_config.rerank_k == 5 and config.checkpoint == ""


def test_evaluate_refuses_a_model_of_another_task(tmp_path):
    workdir = tmp_path / "run"
    load_recipe("finetune").main(["--task", "image_text_classification", "--smoke", "--workdir", str(workdir),
                                  "verbose=0"])
    with pytest.raises(TypeError, match="VLBEiTVQA"):
        load_recipe("evaluate").main(["--task", "vqa", "--model", str(workdir / "model.keras"), "--smoke",
                                      "--config", load_recipe("finetune").DEFAULT_CONFIG])


# -------------------------------------------------------------------- resume
def test_killed_run_resumes_without_repeating_or_losing_steps(tmp_path):
    recipe = load_recipe("finetune")
    args = ["--task", "nlvr", "--smoke", "verbose=0"]
    reference = tmp_path / "reference"
    recipe.main(args + ["--workdir", str(reference)])

    resumed = tmp_path / "resumed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "finetune.py"), *args, "--workdir", str(resumed),
         "debug.kill_after_steps=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert killed.returncode == 3, killed.stderr[-3000:]  # killed during the 2nd epoch (step 3 of 4)
    steps = [json.loads(line)["step"] for line in open(resumed / "metrics.jsonl")]
    assert steps == [2] and not (resumed / "model.keras").exists()

    summary = recipe.main(args + ["--workdir", str(resumed)])
    assert summary["steps"] == 4
    assert [json.loads(line)["step"] for line in open(resumed / "metrics.jsonl")] == [2, 4]
    a = keras.saving.load_model(reference / "model.keras")
    b = keras.saving.load_model(resumed / "model.keras")
    for x, y, v in zip(weights(a), weights(b), a.weights):
        np.testing.assert_allclose(x, y, atol=1e-6, err_msg=v.path)
    ref = json.loads((reference / "summary.json").read_text())
    assert without_timing(summary["metrics"]) == without_timing(ref["metrics"])


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretraining run of recipes/pretrain.py --smoke (tiny, 32 px, text 8)."""
    workdir = tmp_path_factory.mktemp("pretrain")
    load_recipe("pretrain").main(["--smoke", "--workdir", str(workdir), "verbose=0"])
    return workdir


def test_checkpoint_from_a_pretraining_preset_directory(pretrained, tmp_path):
    preset = pretrained / "preset"
    source, tokenizer = finetuning.load_checkpoint(preset)
    assert tokenizer is not None
    assert tokenizer.get_vocabulary() == [line for line in open(pretrained / "vocab.txt").read().splitlines()]

    # Resolution and text-length change at load time, weights moved over.
    recipe = load_recipe("finetune")
    config = recipe.build_config("nlvr2", smoke=True, checkpoint=str(preset),
                                 overrides=["model.overrides.image_size=(48, 48)",
                                            "model.overrides.max_text_length=6"])
    backbone = finetuning.build_backbone(config.model, tokenizer, source)
    assert tuple(backbone.image_size) == (48, 48) and backbone.max_text_length == 6
    src = {v.path: keras.ops.convert_to_numpy(v) for v in source.weights}
    same = [v for v in backbone.weights if tuple(v.shape) == src[v.path].shape]
    assert len(same) > 0.9 * len(backbone.weights)
    for v in same:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), src[v.path], err_msg=v.path)
    table = [v for v in backbone.weights if v.path.endswith("relative_position_bias_table")]
    assert table and tuple(table[0].shape) != src[table[0].path].shape  # resized to the 6 x 6 grid

    # model.load_weights=false: same architecture, fresh weights.
    config.model.load_weights = False
    fresh = finetuning.build_backbone(config.model, tokenizer, source)
    assert fresh.get_config()["image_size"] == backbone.get_config()["image_size"]
    kernel = next(v for v in fresh.weights if v.path.endswith("kernel"))
    assert not np.array_equal(keras.ops.convert_to_numpy(kernel), src[kernel.path])

    # The recipe end to end: NLVR2 adds the third modality row from the image row.
    workdir = tmp_path / "nlvr2"
    summary = recipe.main(["--task", "nlvr2", "--smoke", "--checkpoint", str(preset), "--workdir",
                           str(workdir), "verbose=0"])
    assert summary["init"] == f"checkpoint {preset}"
    assert (workdir / "vocab.txt").read_text() == (pretrained / "vocab.txt").read_text()
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.backbone.num_modality_types == 3


def test_checkpoint_from_a_backbone_keras_file(pretrained):
    backbone, tokenizer = finetuning.load_checkpoint(pretrained / "backbone.keras")
    assert isinstance(backbone, vlbeit_keras.VLBEiTBackbone)
    assert tokenizer is not None and tokenizer.vocabulary_size() == backbone.vocabulary_size
    with pytest.raises(FileNotFoundError, match="does not exist"):
        finetuning.load_checkpoint(pretrained / "missing")


# ---------------------------------------------------------------- plugin task
@pytest.fixture
def plugin_task():
    from vlbeit_keras.tasks import image_text_classification as itc

    def example(num_records, image_size, seed=0):
        records, config = itc.example(num_records, image_size, seed)
        return records, {"image_size": config["image_size"], "num_classes": 3}

    spec = dataclasses.replace(itc.TASK, name="three_way", example=example)
    with registered_task("three_way", spec, "three_way_plugin", "three-way 0.1"):
        yield spec


def test_plugin_task_runs_on_its_example_records(plugin_task, tmp_path):
    summary = load_recipe("finetune").main(["--task", "three_way", "--smoke", "--workdir", str(tmp_path),
                                            "verbose=0"])
    assert summary["steps"] == 4 and 0.0 <= summary["metrics"]["accuracy"] <= 1.0


# ----------------------------------------------------------------------- data
def test_daquar_split_is_by_image_deterministic_and_80_20(shared):
    shared("data", "daquar_subset")
    recipe = load_recipe("finetune")
    config = recipe.build_config("vqa", f"{recipe.DEFAULT_CONFIG}:daquar")
    train, test, _, _ = finetuning.load_task_data(config, "vqa")
    again_train, again_test, _, _ = finetuning.load_task_data(config, "vqa")
    assert [r["question_id"] for r in train] == [r["question_id"] for r in again_train]
    assert [r["question_id"] for r in test] == [r["question_id"] for r in again_test]
    train_images, test_images = {r["image_id"] for r in train}, {r["image_id"] for r in test}
    assert not train_images & test_images
    records = finetuning.read_sources(config.data.train)
    assert len(train) + len(test) == len(records) == 959
    images = {r["image_id"] for r in records}  # 122 of the 123 images have questions
    assert train_images | test_images == images
    assert len(train_images) == round(0.8 * len(images))
    # The split depends on the set of images, not on the record order.
    from vlbeit_keras.data.readers import split_records

    shuffled = [records[i] for i in np.random.default_rng(1).permutation(len(records))]
    parts = split_records(shuffled, {"train": 0.8, "test": 0.2}, key="image_id", seed=0)
    assert {r["image_id"] for r in parts["test"]} == test_images


def test_nlvr_majority_baseline_on_real_data(shared):
    shared("data", "nlvr1")
    recipe = load_recipe("finetune")
    config = recipe.build_config("nlvr", f"{recipe.DEFAULT_CONFIG}:nlvr1")
    train, dev, _, _ = finetuning.load_task_data(config, "nlvr")
    spec = vlbeit_keras.get_registry("heads").get("nlvr")
    baseline = spec.baseline(train, dev, **spec.config())
    assert baseline["label"] == "true"
    assert baseline["num_images"] == 5934
    assert round(baseline["accuracy"], 4) == 0.5531 and round(baseline["consistency"], 4) == 0.0637


def test_demo_data_per_task():
    for task in BUILT_INS:
        train, test, overrides = finetuning.demo_task_data(task, 12, 6, 32)
        assert len(train) >= 12 and len(test) >= 6
    train, _, overrides = finetuning.demo_task_data("image_classification", 40, 4, 32)
    assert overrides["num_classes"] == 4 and {r["label"] for r in train} <= {0, 1, 2, 3}
    _, test, overrides = finetuning.demo_task_data("nlvr", 4, 4, 32)
    assert overrides["images_per_example"] == 1 and test[3]["identifier"] == "3-0"
    # Train and test scenes differ (different seeds).
    train, test, _ = finetuning.demo_task_data("vqa", 20, 20, 32)
    assert not {r["image"] for r in train} & {r["image"] for r in test}


def test_format_metrics_names_the_baseline_prediction():
    from vlbeit_keras.training.finetuning import format_metrics

    text = format_metrics({"accuracy": 0.838, "num_images": 500},
                          {"accuracy": 0.232, "num_images": 500, "label": 2})
    assert "(baseline predicts label 2)" in text.splitlines()[0]
    assert "83.80%" in text and "23.20%" in text and "num_images=500" in text
    vqa = format_metrics({"vqa_accuracy": 0.392}, {"vqa_accuracy": 0.168, "answer": "yes"})
    assert "answer 'yes'" in vqa
