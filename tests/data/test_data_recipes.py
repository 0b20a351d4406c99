"""Smoke runs of the data recipes (tiny sizes)."""

import importlib.util
import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_visual_tokenizer_smoke(tmp_path, capsys):
    recipe = _load("train_visual_tokenizer")
    out = tmp_path / "vt.keras"
    stats = recipe.main(["--smoke", f"output={out}", "tokenizer.patch_size=16"])
    printed = capsys.readouterr().out
    assert out.exists()
    assert "usage on training patches" in printed and "held-out" in printed
    assert stats["used_codes"] + stats["dead_codes"] == 32
    assert stats["history"][-1]["inertia"] <= stats["history"][0]["inertia"]
    from vlbeit_keras.data.visual_tokenizers import load_visual_tokenizer

    tokenizer = load_visual_tokenizer(out)
    ids = np.asarray(tokenizer(np.zeros((1, 64, 64, 3), "float32")))
    assert ids.shape == (1, 16)


def test_train_visual_tokenizer_rejects_unknown_field():
    recipe = _load("train_visual_tokenizer")
    import pytest

    with pytest.raises(ValueError, match="Unknown config field"):
        recipe.main(["--smoke", "tokenizer.codebook=8"])


def test_benchmark_input_smoke(capsys):
    bench = _load("benchmark_input")
    results = bench.main(["--data", "demo", "--limit", "16", "--batch-size", "4", "--steps", "2",
                          "--warmup", "1", "--image-size", "64"])
    assert set(results) == {"image", "image_text"} and all(v > 0 for v in results.values())
    assert "images/s" in capsys.readouterr().out
