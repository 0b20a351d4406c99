"""Compare a converted VLMo checkpoint with outputs of the official VLMo code.

    python -m vlbeit_keras convert --from vlmo ../shared/fixtures/vlmo_reference/config_a/weights.npz --out /tmp/config_a
    python recipes/verify_vlmo_parity.py /tmp/config_a ../shared/fixtures/vlmo_reference/config_a

The reference folder holds ``inputs.npz`` and ``outputs.npz`` in the format of
``../shared/fixtures/vlmo_reference/config_a`` (see its README and
``docs/checkpoints.md``, "Verifying parity"). Prints, per output, the maximum
absolute difference and how we compute it; exits with status 1 when one
exceeds ``--atol`` (default 1e-4: the fixture README's safe float32 bound).
Run it under each ``KERAS_BACKEND``.
"""

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("converted", help="folder written by `python -m vlbeit_keras convert`")
    parser.add_argument("reference", help="folder with inputs.npz and outputs.npz")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)

    import keras

    from vlbeit_keras.converters import load_conversion
    from vlbeit_keras.converters.parity import OUTPUT_SOURCES
    from vlbeit_keras.converters.parity import compare_with_reference

    diffs = compare_with_reference(load_conversion(args.converted), args.reference)
    width = max(len(n) for n in diffs)
    print(f"backend {keras.backend.backend()}: max |ours - VLMo| over {len(diffs)} outputs")
    for name, diff in diffs.items():
        flag = "" if diff <= args.atol else "   <-- exceeds --atol"
        print(f"  {name:<{width}}  {diff:.2e}  {OUTPUT_SOURCES[name]}{flag}")
    worst = max(diffs.values())
    print(f"worst {worst:.2e} (atol {args.atol:g})")
    return 0 if worst <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
