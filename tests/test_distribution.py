"""Data and model parallelism (keras.distribution) and per-host input sharding.

The equivalence test always runs a JAX subprocess with 8 simulated CPU devices,
whatever KERAS_BACKEND this suite runs under (keras.distribution is JAX-only,
and the device count must be set before JAX is imported).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO
from vlbeit_keras import distribution as dist

JAX_ENV = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def eight_device_step(tmp_path_factory):
    if keras.backend.backend() != "jax":
        # The subprocess is JAX whatever this suite's backend, so its result is
        # the same in every pass: it is computed and checked in the JAX pass.
        pytest.skip("8-device keras.distribution step runs in the KERAS_BACKEND=jax pass")
    out = tmp_path_factory.mktemp("dist") / "step.npz"
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.distributed_step", str(out)],
        cwd=REPO, env=JAX_ENV, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = np.load(out)
    return {k: data[k] for k in data.files}


@pytest.mark.parametrize("mode", ["data_parallel", "model_parallel"])
def test_one_step_on_8_devices_matches_single_device(eight_device_step, mode):
    r = eight_device_step
    logs = sorted(k.split("/", 2)[2] for k in r if k.startswith("single/logs/"))
    assert "loss" in logs and "mvlm_image_loss" in logs
    for key in logs:
        a, b = float(r[f"single/logs/{key}"]), float(r[f"{mode}/logs/{key}"])
        assert np.isfinite(a) and abs(a - b) <= 1e-5 * max(1.0, abs(a)), (mode, key, a, b)
    weights = [k.split("/", 2)[2] for k in r if k.startswith("single/weights/")]
    assert len(weights) > 60
    moved = 0
    for path in weights:
        before = r[f"initial/{path}"]
        single, other = r[f"single/weights/{path}"], r[f"{mode}/weights/{path}"]
        # Compare the updates (lr * gradient), not just the weights.
        np.testing.assert_allclose(other - before, single - before, rtol=1e-4, atol=2e-6,
                                   err_msg=f"{mode}: {path}")
        moved += bool(np.abs(single - before).max() > 1e-4)
    assert moved > 50  # the step really changed the model


def test_variables_are_placed_as_configured(eight_device_step):
    r = eight_device_step
    sharding = {k.split("/", 2)[2]: str(r[k]) for k in r if k.startswith("model_parallel/sharding/")}
    assert sharding["transformer/blocks_0/attn/qkv/kernel"] == "(None, 'model') on 8 devices"
    assert sharding["transformer/blocks_1/attn/proj/kernel"] == "('model', None) on 8 devices"
    assert sharding["transformer/blocks_1/mlp_vl/fc1/kernel"] == "(None, 'model') on 8 devices"
    assert sharding["transformer/blocks_0/mlp_imag/fc2/kernel"] == "('model', None) on 8 devices"
    assert sharding["mlm_head/output_kernel"] == "(None, 'model') on 8 devices"
    assert sharding["transformer/norm/gamma"] == "(None,) on 8 devices"
    data_parallel = str(r["data_parallel/sharding/transformer/blocks_0/attn/qkv/kernel"])
    assert data_parallel == "(None, None) on 8 devices"  # replicated
    assert str(r["single/sharding/transformer/norm/gamma"]).endswith("on 1 devices")


def _mesh(shape, names=("batch", "model")):
    devices = [f"cpu:{i}" for i in range(int(np.prod(shape)))]
    return keras.distribution.DeviceMesh(shape=shape, axis_names=names, devices=devices)


def test_layout_map_targets_attention_and_expert_kernels_by_path():
    layout_map = dist.vlbeit_layout_map(_mesh((2, 4)), hidden_dim=768, intermediate_dim=3072,
                                        vocabulary_size=30522, codebook_size=8192)

    def axes(path):
        layout = layout_map[path]
        return None if layout is None else tuple(layout.axes)

    assert axes("transformer/blocks_3/attn/qkv/kernel") == (None, "model")
    assert axes("transformer/blocks_3/attn/q_bias") == ("model",)
    assert axes("transformer/blocks_3/attn/proj/kernel") == ("model", None)
    for expert in ("mlp_text", "mlp_imag", "mlp_vl"):
        assert axes(f"transformer/blocks_11/{expert}/fc1/kernel") == (None, "model")
        assert axes(f"transformer/blocks_11/{expert}/fc1/bias") == ("model",)
        assert axes(f"transformer/blocks_11/{expert}/fc2/kernel") == ("model", None)
    # Also inside a task model whose paths carry a prefix.
    assert axes("vlbeit_backbone/transformer/blocks_0/attn/qkv/kernel") == (None, "model")
    assert axes("mim_head/dense/kernel") == (None, "model")
    # 30,522 words do not split over 4 devices: the vocabulary tables stay replicated.
    assert axes("text_embeddings/word_embeddings/embeddings") is None
    assert axes("mlm_head/output_kernel") is None
    # Norms, layerscale, fc2 biases, the relative table stay replicated.
    for path in ("transformer/blocks_3/norm1/gamma", "transformer/blocks_3/gamma_1",
                 "transformer/blocks_3/mlp_imag/fc2/bias",
                 "transformer/relative_position_bias/relative_position_bias_table"):
        assert axes(path) is None, path
    assert layout_map.device_mesh.shape == (2, 4)


def test_layout_map_needs_model_axis_and_divisible_mesh():
    with pytest.raises(ValueError, match="no model axis"):
        dist.vlbeit_layout_map(_mesh((8,), ("batch",)), 32, 64)
    with pytest.raises(ValueError, match="model_parallel_size"):
        dist.device_mesh(3, devices=[f"cpu:{i}" for i in range(8)])


def test_unknown_kind_and_backend_support():
    with pytest.raises(ValueError, match="Unknown distribution kind"):
        dist.make_distribution("pipeline_parallel")
    assert dist.make_distribution("none") is None
    if keras.backend.backend() == "jax":
        distribution = dist.make_distribution("data_parallel")
        assert isinstance(distribution, keras.distribution.DataParallel)
        assert distribution.auto_shard_dataset is False  # the pipeline shards per host
    else:
        with pytest.raises(ValueError, match="JAX backend only"):
            dist.make_distribution("data_parallel")


def test_multi_host_is_requested_by_environment(monkeypatch):
    for name in dist.MULTI_HOST_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not dist.multi_host_requested()
    assert dist.initialize_multi_host() == (0, 1)  # single host: nothing to do
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    assert dist.multi_host_requested()
    assert not dist.multi_host_requested(False)


def test_batch_divisibility_errors():
    assert dist.per_shard_batch_size(16, 2) == 8
    with pytest.raises(ValueError, match="not divisible by the 3 data shards"):
        dist.per_shard_batch_size(16, 3)


def _unmasked(fields):
    """Original token ids: masked positions restored from their targets."""
    ids = fields["token_ids"].copy()
    for b in range(ids.shape[0]):
        for p, t, w in zip(fields["text_mask_positions"][b], fields["text_mask_ids"][b],
                           fields["text_mask_weights"][b]):
            if w > 0:
                ids[b, p] = t
    return ids


def test_host_shards_partition_the_global_pretraining_batch():
    from vlbeit_keras.data import demo_corpus as demo
    from vlbeit_keras.data import pipeline as P

    tokenizer = demo.demo_tokenizer()
    records = dict(text_records=demo.demo_records("text", 40),
                   image_records=demo.demo_records("images", 12, image_size=40),
                   pair_records=demo.demo_records("captions", 10, image_size=40))
    config = P.PretrainingInputConfig(image_size=32, patch_size=8, text_length=16, pair_text_length=8,
                                      text_batch_size=4, image_batch_size=4, pair_batch_size=2, seed=3)

    def take(ds, n=3):
        return [{s: {k: v.numpy() for k, v in f.items()} for s, f in b.items()} for b in ds.take(n)]

    whole = take(P.make_pretraining_dataset(config, tokenizer, **records, start_step=1))
    shards = [take(P.make_pretraining_dataset(config, tokenizer, **records, start_step=1,
                                              num_shards=2, shard_index=i)) for i in range(2)]
    for step, batch in enumerate(whole):
        parts = [shards[i][step] for i in range(2)]
        assert parts[0]["image"]["images"].shape[0] == 2 and parts[0]["image_text"]["images"].shape[0] == 1
        for stream in ("image", "image_text"):
            for field in ("images", "patch_mask", "image_mask_positions", "image_mask_weights"):
                joined = np.concatenate([p[stream][field] for p in parts])
                np.testing.assert_array_equal(joined, batch[stream][field], err_msg=f"{stream}/{field}")
        assert not np.array_equal(parts[0]["image"]["images"], parts[1]["image"]["images"])
        for stream in ("text", "image_text"):
            np.testing.assert_array_equal(np.concatenate([p[stream]["padding_mask"] for p in parts]),
                                          batch[stream]["padding_mask"])
            np.testing.assert_array_equal(np.concatenate([_unmasked(p[stream]) for p in parts]),
                                          _unmasked(batch[stream]))
    with pytest.raises(ValueError, match="not divisible by the 3 data shards"):
        P.make_pretraining_dataset(config, tokenizer, **records, num_shards=3, shard_index=0)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _recipe(workdir, *overrides, env=None, devices=8):
    env = dict(env or JAX_ENV, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, str(REPO / "recipes" / "pretrain.py"), "--smoke", "--workdir", str(workdir),
         "verbose=0", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _summary(process, timeout=1500):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.large
def test_recipe_model_parallel_on_8_devices_matches_single_device(tmp_path):
    single = _summary(_recipe(tmp_path / "single", devices=1))
    sharded = _summary(_recipe(tmp_path / "mp", "distribution.kind=model_parallel",
                               "distribution.model_parallel_size=4"))
    assert sharded["num_devices"] == 8 and sharded["distribution"] == "model_parallel"
    for epoch in ("first_epoch", "last_epoch"):
        for key, value in single[epoch].items():
            if key.endswith(("_loss", "_accuracy")) or key == "loss":
                assert abs(sharded[epoch][key] - value) <= 1e-4, (epoch, key, value, sharded[epoch][key])


@pytest.mark.large
def test_multi_host_data_parallel_recipe_two_processes(tmp_path):
    """Two processes x 4 CPU devices joined by keras.distribution.initialize (env variables)."""
    port = _free_port()
    batches = [f"data.{k}_batch_size=8" for k in ("text", "image", "pair")]
    procs = []
    for i in range(2):
        env = dict(JAX_ENV, KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                   KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(i))
        procs.append(_recipe(tmp_path, "distribution.kind=data_parallel", *batches, env=env, devices=4))
    summaries = [_summary(p) for p in procs]
    assert [s["process_index"] for s in summaries] == [0, 1]
    assert all(s["process_count"] == 2 and s["num_devices"] == 8 and s["steps"] == 6 for s in summaries)
    assert summaries[1]["workdir"] == str(tmp_path / "process_1")
    # Every process logs the same global metrics and ends with the same weights.
    assert summaries[0]["last_epoch"]["loss"] == summaries[1]["last_epoch"]["loss"]
    assert np.isfinite(summaries[0]["last_epoch"]["loss"])
    a = keras.saving.load_model(tmp_path / "backbone.keras")
    b = keras.saving.load_model(tmp_path / "process_1" / "backbone.keras")
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))
