"""Run the three encodings of a backbone under the current KERAS_BACKEND.

Used by the cross-backend test as a subprocess:
    python -m tests.helpers.backbone_outputs CONFIG.json WEIGHTS.npz INPUTS.npz OUT.npz
Weights are keyed by Keras variable path, so variable order does not matter.
"""

import json
import sys

import numpy as np


def encode_all(backbone, inputs):
    from keras import ops

    fused = backbone(
        {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"], "images": inputs["images"]}
    )
    text = backbone.encode_text(inputs["token_ids"], inputs["padding_mask"])
    image = backbone.encode_image(inputs["images"])
    out = {f"fused_{k}": v for k, v in fused.items()}
    out.update({f"text_{k}": v for k, v in text.items()})
    out.update({f"image_{k}": v for k, v in image.items()})
    return {k: ops.convert_to_numpy(v) for k, v in out.items()}


def set_weights_by_path(backbone, weights):
    for v in backbone.weights:
        v.assign(weights[v.path])


def main(config_path, weights_path, inputs_path, out_path):
    import vlbeit_keras

    config = json.load(open(config_path))
    backbone = vlbeit_keras.VLBEiTBackbone(**config)
    set_weights_by_path(backbone, dict(np.load(weights_path)))
    np.savez(out_path, **encode_all(backbone, dict(np.load(inputs_path))))


if __name__ == "__main__":
    main(*sys.argv[1:5])
