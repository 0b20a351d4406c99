"""recipes/pretrain.py: smoke run end to end, outputs, and resume after a kill."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np

import vlbeit_keras
from tests.conftest import REPO


def load_recipe():
    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steps_logged(workdir):
    return [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]


def test_smoke_run_writes_everything(tmp_path):
    summary = load_recipe().main(["--smoke", "--workdir", str(tmp_path), "verbose=0"])
    assert summary["steps"] == summary["total_steps"] == 6
    for name in ("backbone.keras", "backbone.weights.h5", "preset/config.json", "preset/model.weights.h5",
                 "visual_tokenizer.keras", "vocab.txt", "metrics.jsonl", "summary.json", "config.json"):
        assert (tmp_path / name).exists(), name
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    first, last = summary["first_epoch"], summary["last_epoch"]
    for key in ("mlm_loss", "mim_loss", "mvlm_text_loss", "mvlm_image_loss"):
        assert np.isfinite(first[key]) and np.isfinite(last[key])
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(str(tmp_path / "preset"))
    restored = keras.saving.load_model(tmp_path / "backbone.keras")
    for a, b in zip(backbone.weights, restored.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_killed_run_resumes_without_repeating_or_losing_steps(tmp_path):
    recipe = load_recipe()
    reference = tmp_path / "reference"
    recipe.main(["--smoke", "--workdir", str(reference), "verbose=0"])

    resumed = tmp_path / "resumed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "pretrain.py"), "--smoke", "--workdir", str(resumed),
         "verbose=0", "debug.kill_after_steps=4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert killed.returncode == 3, killed.stderr[-3000:]  # killed during the 2nd epoch (step 4 of 6)
    assert steps_logged(resumed) == [3]
    assert not (resumed / "backbone.keras").exists()

    summary = recipe.main(["--smoke", "--workdir", str(resumed), "verbose=0"])
    # Optimizer step count continues from the checkpoint (3) to the end (6): nothing repeated.
    assert summary["steps"] == 6
    assert steps_logged(resumed) == [3, 6]
    # Weights and data position continue exactly: the result equals the uninterrupted run.
    a = keras.saving.load_model(reference / "backbone.keras")
    b = keras.saving.load_model(resumed / "backbone.keras")
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y), atol=1e-6, err_msg=x.path)
    ref_rows = [json.loads(line) for line in open(reference / "metrics.jsonl")]
    res_rows = [json.loads(line) for line in open(resumed / "metrics.jsonl")]
    assert abs(ref_rows[-1]["loss"] - res_rows[-1]["loss"]) < 1e-5

    # A finished run started again does no more steps.
    again = recipe.main(["--smoke", "--workdir", str(resumed), "verbose=0"])
    assert again["steps"] == 6 and steps_logged(resumed) == [3, 6]
