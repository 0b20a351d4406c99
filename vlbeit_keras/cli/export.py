"""``python -m vlbeit_keras export``: our weights -> a foreign state dict.

::

    python -m vlbeit_keras export --to vlmo vlmo_base/ --out vlmo_base_roundtrip.npz
    python -m vlbeit_keras export --to vlmo finetuned_vqa.keras --out vqa.pt

The source is a folder written by ``convert`` (backbone, task heads and the
unmapped source arrays), any ``VLBEiTBackbone`` preset folder, or a ``.keras``
file of a backbone, task model or pretrainer. ``.npz`` needs only NumPy to
read; ``.pt`` is a ``torch.save`` dict of tensors. See ``docs/checkpoints.md``.
"""

import os
import sys

NAME = "export"
HELP = "Export VLBEiT weights as a foreign (e.g. VLMo-named) state dict (.npz or .pt)."


def add_arguments(parser):
    """Add the `export` command's options to its argparse ``parser``."""
    parser.add_argument("source", help="converted/preset folder or .keras file")
    parser.add_argument("--to", dest="target", default="vlmo",
                        help="registered converter name (default: vlmo)")
    parser.add_argument("--out", required=True, help="output file (.npz, .pt or .pth)")
    parser.add_argument("--task", dest="tasks", action="append", metavar="NAME",
                        help="include only this task's heads (folders; repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args):
    """Run the `export` command with the parsed ``args``; returns the process exit code."""
    import vlbeit_keras  # noqa: F401  (plugins: converters, task classes)
    from vlbeit_keras.converters import CheckpointError
    from vlbeit_keras.converters import export_checkpoint

    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out!r} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 1
    try:
        state_dict = export_checkpoint(args.source, args.out, to=args.target, tasks=args.tasks)
    except (CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = sum(int(getattr(v, "size", 1)) for v in state_dict.values())
    print(f"Wrote {len(state_dict)} arrays ({count:,} values) to {args.out}")
    return 0
