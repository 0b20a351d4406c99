"""Per-objective pretraining losses under the current KERAS_BACKEND.

Cross-backend test subprocess:
    python -m tests.helpers.pretrainer_losses WEIGHTS.npz BATCH.npz OUT.npz
Builds the tiny pretrainer (MLM + MIM + MVLM, PatchIntensityTokenizer), loads
weights by variable path and writes each objective's metric values.
"""

import sys

import numpy as np


def build_tiny_pretrainer():
    import vlbeit_keras
    from tests.helpers.pretraining import PatchIntensityTokenizer

    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    return vlbeit_keras.VLBEiTPretrainer(backbone, visual_tokenizer=PatchIntensityTokenizer(8, 16))


def flatten(batch):
    return {f"{s}/{k}": v for s, fields in batch.items() for k, v in fields.items()}


def unflatten(flat):
    batch = {}
    for key, value in flat.items():
        stream, field = key.split("/")
        batch.setdefault(stream, {})[field] = value
    return batch


def objective_values(pretrainer, batch):
    from keras import ops

    y_pred = pretrainer(batch, training=False)
    out = {}
    for name, objective in pretrainer.objectives.items():
        values = objective.compute_loss(pretrainer, batch[objective.stream], y_pred[name])
        for metric in objective.metric_names:
            out[f"{name}_{metric}"] = float(ops.convert_to_numpy(values[metric]))
    return out


def weights_by_path(model):
    from keras import ops

    return {v.path: ops.convert_to_numpy(v) for v in model.weights}


def main(weights_path, batch_path, out_path):
    pretrainer = build_tiny_pretrainer()
    weights = dict(np.load(weights_path))
    for v in pretrainer.weights:
        v.assign(weights[v.path])
    values = objective_values(pretrainer, unflatten(dict(np.load(batch_path))))
    np.savez(out_path, **values)


if __name__ == "__main__":
    main(*sys.argv[1:4])
