"""NLVR (v1) and NLVR2 task models, adapters and prediction files."""

import csv

import keras
import numpy as np
import pytest
from PIL import Image

from vlbeit_keras.tasks import nlvr
from vlbeit_keras.tasks import nlvr2
from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
from vlbeit_keras.utils.resize import rebuild_backbone


def test_nlvr2_requires_and_uses_a_third_modality_row(tiny_backbone, rng, pair_inputs, to_numpy):
    with pytest.raises(ValueError, match="num_modality_types=3"):
        nlvr2.VLBEiTNLVR2(tiny_backbone)
    backbone = rebuild_backbone(tiny_backbone, num_modality_types=3)
    model = nlvr2.VLBEiTNLVR2(backbone)
    x = pair_inputs(rng, 2)
    second = rng.uniform(-1, 1, x["images"].shape).astype("float32")
    inputs = {**x, "images": np.stack([x["images"], second], axis=1)}
    logits = to_numpy(model(inputs))
    assert logits.shape == (2, 2)
    # Independent composition: pass 1 with row 1, pass 2 with row 2, concat, head.
    p0 = backbone.encode_image_text(x["token_ids"], x["padding_mask"], x["images"], image_modality_type=1)
    p1 = backbone.encode_image_text(x["token_ids"], x["padding_mask"], second, image_modality_type=2)
    expected = model.classifier(keras.ops.concatenate([p0["pooled_output"], p1["pooled_output"]], -1))
    np.testing.assert_allclose(logits, to_numpy(expected), atol=1e-5)
    # Row 2 starts as a copy of row 1 but is a separate weight.
    rows = to_numpy(backbone.modality_type_embeddings.embeddings)
    np.testing.assert_array_equal(rows[2], rows[1])
    backbone.modality_type_embeddings.embeddings.assign(rows + np.eye(3, 32, dtype="float32")[[0, 0, 2]])
    assert not np.allclose(to_numpy(model(inputs)), logits)
    with pytest.raises(ValueError, match=r"\(batch, 2, H, W, 3\)"):
        model(x)


def test_nlvr2_build_model_expands_a_two_row_backbone(tiny_backbone):
    model = nlvr2.build_model(tiny_backbone)
    assert model.backbone.num_modality_types == 3
    assert tiny_backbone.num_modality_types == 2


def test_nlvr2_dataset_from_image_files(tmp_path, tokenizer, rng):
    paths = []
    for i in range(4):
        path = tmp_path / f"dev-{i}-0-img{i % 2}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    records = [{"images": [paths[0], paths[1]], "text": "the left is red", "label": "True",
                "identifier": "dev-0-0-0"},
               {"images": [paths[2], paths[3]], "text": "two circles", "label": False,
                "identifier": "dev-0-1-0"}]
    io = {"tokenizer": tokenizer, "image_config": ImagePreprocessingConfig(32), "text_length": 8}
    ds = nlvr2.make_dataset(records, batch_size=2, **io)
    x, y = next(iter(ds))
    assert x["images"].shape == (2, 2, 32, 32, 3)
    assert np.asarray(y).tolist() == [1, 0]
    assert float(np.min(x["images"])) >= -1.0 and float(np.max(x["images"])) <= 1.0
    with pytest.raises(ValueError, match="record 0: field 'images' must be a pair"):
        nlvr2.make_dataset([{"images": paths[0], "text": "t", "label": "True"}],
                           batch_size=1, **io)


def test_nlvr_non_square_grid_and_csv(tiny_backbone, tokenizer, tmp_path, rng):
    # A 400x100-like aspect ratio on the tiny patch-8 model: 16 x 48 -> 2 x 6 grid.
    model = nlvr.build_model(tiny_backbone, image_size=(16, 48))
    assert model.backbone.grid_size == (2, 6)
    records, _ = nlvr.example(12, (16, 48), seed=1)
    metrics, rows = nlvr.evaluate(model, records, tokenizer=tokenizer,
                                  image_config=ImagePreprocessingConfig((16, 48)), batch_size=6)
    assert metrics["num_images"] == 12 and metrics["num_sentences"] == 1
    assert rows[0][0] == "dev-0-0-0.png" and rows[0][1] in ("true", "false")
    path = nlvr.export_predictions(rows, str(tmp_path / "predictions.csv"))
    # Read back as the official metrics_images.py does: split(","), key from file name.
    with open(path) as f:
        parsed = [line.strip().split(",") for line in f if line.strip()]
    assert [tuple(p) for p in parsed] == rows
    correct = sum(p[1] == r["label"] for p, r in zip(parsed, records))
    assert metrics["accuracy"] == pytest.approx(correct / 12)


def test_nlvr_uses_file_names_when_images_are_paths(tmp_path):
    assert nlvr.image_name({"image": str(tmp_path / "dev-3-1-4.png")}, 0) == "dev-3-1-4.png"
    assert nlvr.image_name({"image": np.zeros((2, 2, 3)), "identifier": "3-1-4"}, 0) == "dev-3-1-4.png"
    with pytest.raises(ValueError, match="identifier"):
        nlvr.image_name({"image": np.zeros((2, 2, 3)), "identifier": "3-1"}, 0)


def test_nlvr2_prediction_csv(tmp_path):
    rows = [("dev-850-0-0", "True"), ("dev-850-1-0", "False")]
    path = nlvr2.export_predictions(rows, str(tmp_path / "p.csv"))
    with open(path) as f:
        assert [tuple(r) for r in csv.reader(f)] == rows


def test_real_nlvr_reader_records_on_a_non_square_grid(shared, tokenizer):
    from vlbeit_keras.data.readers import read_nlvr

    root = shared("data", "nlvr1", "dev")
    examples = read_nlvr(str(root / "dev.json"))[:2]  # six images each
    per_image = nlvr.per_image_records(examples)
    assert len(per_image) == 12 and per_image[7]["image_index"] == 1
    assert nlvr.image_name(per_image[7], 7) == f"dev-{examples[1]['identifier']}-1.png"
    ds = nlvr.make_dataset(examples, tokenizer=tokenizer, text_length=8, batch_size=6,
                           image_config=ImagePreprocessingConfig((96, 400), resize_mode="crop"))
    x, y = next(iter(ds))
    assert x["images"].shape == (6, 96, 400, 3)
    assert np.asarray(y).tolist() == [int(examples[0]["label"])] * 6
    pixels = np.asarray(x["images"])
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0 and pixels.std() > 0.05
