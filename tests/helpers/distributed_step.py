"""One pretrainer training step on 8 simulated CPU devices, three ways.

    python -m tests.helpers.distributed_step OUT.npz

Always runs on the JAX backend with ``--xla_force_host_platform_device_count=8``
(both must be set before JAX is imported, hence a subprocess). Builds the tiny
pretrainer (MLM + MIM + MVLM) with fixed random weights and one batch of 8
examples per stream, then takes one SGD step (a) on one device, (b) under
``DataParallel`` over 8 devices, (c) under ``ModelParallel`` on a (2, 4)
(batch, model) mesh with :func:`vlbeit_keras.distribution.vlbeit_layout_map`.
Writes, per mode, the step's logged metrics, every updated trainable weight
and the sharding of a few variables (as strings), for the test to compare.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import numpy as np  # noqa: E402

BATCH = 8
LEARNING_RATE = 0.5  # SGD: the update is lr * gradient, so gradients are compared too
SHARDING_PROBES = (
    "transformer/blocks_0/attn/qkv/kernel",
    "transformer/blocks_1/attn/proj/kernel",
    "transformer/blocks_1/mlp_vl/fc1/kernel",
    "transformer/blocks_0/mlp_imag/fc2/kernel",
    "mlm_head/output_kernel",
    "transformer/norm/gamma",
)


def initial_weights(pretrainer, seed=1):
    rng = np.random.default_rng(seed)
    return {
        v.path: (float(v.path.endswith("gamma")) + 0.1 * rng.normal(size=v.shape)).astype("float32")
        for v in pretrainer.trainable_weights
    }


def one_step(distribution, weights, batch):
    import keras

    from tests.helpers.pretrainer_losses import build_tiny_pretrainer

    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(0)
        pretrainer = build_tiny_pretrainer()
        for v in pretrainer.trainable_weights:
            v.assign(weights[v.path])
        pretrainer.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
        logs = pretrainer.train_on_batch(batch, return_dict=True)
        out = {f"logs/{k}": np.float64(v) for k, v in logs.items()}
        for v in pretrainer.trainable_weights:
            out[f"weights/{v.path}"] = np.asarray(v.value)
        by_path = {v.path: v for v in pretrainer.weights}
        for path in SHARDING_PROBES:
            sharding = by_path[path].value.sharding
            spec = getattr(sharding, "spec", None)
            spec = None if spec is None else tuple(spec)
            out[f"sharding/{path}"] = np.array(f"{spec} on {len(sharding.device_set)} devices")
        return out
    finally:
        keras.distribution.set_distribution(None)


def main(out_path):
    import jax
    import keras

    from tests.helpers.pretrainer_losses import build_tiny_pretrainer
    from tests.helpers.pretraining import synthetic_batch
    from vlbeit_keras.distribution import make_distribution

    assert jax.device_count() == 8, jax.devices()
    keras.utils.set_random_seed(0)
    reference = build_tiny_pretrainer()
    weights = initial_weights(reference)
    batch = synthetic_batch(reference.backbone, np.random.default_rng(0), batch=BATCH)
    backbone = reference.backbone
    modes = {
        "single": None,
        "data_parallel": make_distribution("data_parallel"),
        "model_parallel": make_distribution(
            "model_parallel", model_parallel_size=4, hidden_dim=backbone.hidden_dim,
            intermediate_dim=backbone.intermediate_dim, vocabulary_size=backbone.vocabulary_size,
            codebook_size=reference.visual_tokenizer.codebook_size,
        ),
    }
    out = {f"initial/{k}": v for k, v in weights.items()}
    for name, distribution in modes.items():
        for key, value in one_step(distribution, weights, batch).items():
            out[f"{name}/{key}"] = value
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
