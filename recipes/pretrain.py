"""Placeholder main job until the pretraining recipe lands: a smoke forward pass."""

import numpy as np

import vlbeit_keras


def main():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    out = backbone({
        "token_ids": np.array([[1, 5, 6, 2, 0, 0, 0, 0]], "int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0, 0, 0, 0]], "int32"),
        "images": np.zeros((1, 32, 32, 3), "float32"),
    })
    for key, value in out.items():
        print(key, tuple(value.shape))


if __name__ == "__main__":
    main()
