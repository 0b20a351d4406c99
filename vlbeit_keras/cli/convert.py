"""``python -m vlbeit_keras convert``: a foreign checkpoint -> a preset folder.

::

    python -m vlbeit_keras convert --from vlmo vlmo_base_patch16_224.pt --out vlmo_base/
    python -m vlbeit_keras convert --from vlmo vqa.pt --out vqa_384/ --set image_size=384
    python -m vlbeit_keras convert --from vlmo ckpt.pt --out tiny/ --preset vlbeit_base

The folder loads with ``VLBEiTBackbone.from_preset(DIR)`` and, for converted
heads, ``vlbeit_keras.converters.load_task(DIR, name)``. Nothing is written
when the checkpoint cannot be read or does not fit (the folder is written
under a temporary name and renamed at the end). See ``docs/checkpoints.md``.
"""

import ast
import json
import sys

NAME = "convert"
HELP = "Convert a foreign checkpoint (e.g. official VLMo weights) into a VLBEiT preset folder."


def parse_assignment(text):
    """``field=value`` -> (field, value); values are Python literals or strings.

    ``image_size=384`` -> 384, ``image_size=384,480`` -> (384, 480),
    ``dtype=bfloat16`` -> "bfloat16", ``layerscale_init=None`` -> None.

    Raises:
        ValueError: no ``=``.
    """
    field, sep, value = text.partition("=")
    if not sep or not field.strip():
        raise ValueError(f"--set expects field=value, got {text!r}.")
    value = value.strip()
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return field.strip(), parsed


def parse_size(text):
    """``"384"`` or ``"384,480"`` -> (H, W)."""
    parts = [int(p) for p in str(text).replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) == 2:
        return tuple(parts)
    raise ValueError(f"Image size must be H or H,W; got {text!r}.")


def read_answer_vocabulary(path):
    """A JSON list of answers, or a JSON dict answer -> class index."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict):
        ordered = sorted(data.items(), key=lambda kv: int(kv[1]))
        if [int(i) for _, i in ordered] != list(range(len(ordered))):
            raise ValueError(f"{path}: answer indices are not 0..{len(ordered) - 1}.")
        return [a for a, _ in ordered]
    if isinstance(data, list):
        return [str(a) for a in data]
    raise ValueError(f"{path}: expected a JSON list of answers or a dict answer -> index.")


def add_arguments(parser):
    """Add the `convert` command's options to its argparse ``parser``."""
    parser.add_argument("checkpoint", help="checkpoint file (.pt, .pth, .bin, .ckpt or .npz)")
    parser.add_argument("--from", dest="source", default="vlmo",
                        help="registered converter name (default: vlmo)")
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument("--preset", help="built-in preset the checkpoint must match "
                        "(default: infer the architecture from the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="backbone config field of the output, e.g. image_size=384, "
                        "max_text_length=64 (repeatable)")
    parser.add_argument("--task", dest="tasks", action="append", metavar="NAME",
                        help="convert only this task's heads: pretraining, retrieval, vqa, "
                        "nlvr2 (repeatable; default: every task whose heads are present)")
    parser.add_argument("--source-image-size", type=parse_size, metavar="H[,W]",
                        help="image size the checkpoint was trained at, when its tables "
                        "do not tell (non-square grids)")
    parser.add_argument("--source-relative-text-length", type=int, metavar="L0",
                        help="text span of the checkpoint's relative table if not 196")
    parser.add_argument("--answer-vocabulary", metavar="JSON",
                        help="VQA answers: a JSON list, or a dict answer -> index")
    parser.add_argument("--allow-unexpected", action="store_true",
                        help="keep keys unknown to the converter (in the extras file) "
                        "instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args):
    """Run the `convert` command with the parsed ``args``; returns the process exit code."""
    import vlbeit_keras  # noqa: F401  (plugins: converters, tasks)
    from vlbeit_keras.converters import CheckpointError
    from vlbeit_keras.converters import convert_checkpoint

    try:
        overrides = dict(parse_assignment(a) for a in args.overrides)
        options = {"overrides": overrides, "preset": args.preset, "tasks": args.tasks}
        if args.source_image_size is not None:
            options["source_image_size"] = args.source_image_size
        if args.source_relative_text_length is not None:
            options["source_relative_text_length"] = args.source_relative_text_length
        if args.allow_unexpected:
            options["allow_unexpected"] = True
        if args.answer_vocabulary:
            options["answer_vocabulary"] = read_answer_vocabulary(args.answer_vocabulary)
        conversion = convert_checkpoint(
            args.checkpoint, args.out, source=args.source, overwrite=args.overwrite, **options
        )
    except (CheckpointError, FileExistsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = conversion.report
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(format_report(report, args.out))
    return 0


def format_report(report, out):
    """Human-readable summary of a conversion report."""
    config = report.get("backbone_config", {})
    lines = [f"Converted {report.get('source_file', report.get('source'))} -> {out}"]
    fields = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim", "num_vl_layers",
              "image_size", "patch_size", "max_text_length", "relative_text_length",
              "vocabulary_size", "num_modality_types", "position_mode")
    lines.append("  backbone: " + ", ".join(f"{f}={config.get(f)}" for f in fields))
    lines.append(f"  keys: {report.get('num_converted_keys')} converted of {report.get('num_keys')}")
    tasks = report.get("tasks") or {}
    lines.append("  tasks: " + (", ".join(f"{n} ({c})" for n, c in tasks.items()) or "none"))
    for path, how in (report.get("resized") or {}).items():
        lines.append(f"  resized {path}: {how}")
    for key, why in (report.get("unused") or {}).items():
        lines.append(f"  unused {key}: {why}")
    for key in report.get("unexpected") or ():
        lines.append(f"  unexpected {key} (kept in the extras file)")
    if report.get("ignored"):
        lines.append(f"  ignored (rebuilt index buffers): {', '.join(report['ignored'])}")
    return "\n".join(lines)
