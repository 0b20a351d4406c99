"""Evaluate a fine-tuned VL-BEiT model: print the metrics, write the predictions.

    python recipes/evaluate.py --model runs/finetune_vqa_demo/model.keras
    python recipes/evaluate.py --task nlvr --model runs/finetune_nlvr1/model.keras \\
        --output runs/eval_nlvr1

The task, data and task settings come from the ``config.json`` that the
fine-tuning run wrote next to the model (its evaluation records: the demo
test split, NLVR dev, the DAQUAR test part, Flickr8k test; task settings
added to the task since the run take their defaults), or from ``--config
FILE:VARIANT`` (as in ``recipes/finetune.py``) plus ``field=value``
overrides (e.g. ``task_config.rerank_k=0``). The tokenizer is the
``vocab.txt`` next to the model unless ``--tokenizer`` is given. Writes the
predictions in the task's official format (VQA results JSON, NLVR CSV, ...)
and ``metrics.json`` (metrics and the trivial baseline) to ``--output``
(default: the model's folder).
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlbeit_keras.config import Config  # noqa: E402
from vlbeit_keras.config import apply_overrides  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=None,
                        help="registered task name (default: the one the run's config.json records)")
    parser.add_argument("--model", required=True, help="fine-tuned .keras model (recipes/finetune.py's model.keras)")
    parser.add_argument("--config", default=None,
                        help="config file[:variant] for the data (default: the run's config.json, else demo)")
    parser.add_argument("--smoke", action="store_true", help="the config's smoke variant (with --config)")
    parser.add_argument("--tokenizer", default=None, help="vocab.txt or preset directory (default: next to the model)")
    parser.add_argument("--output", default=None, help="directory for predictions and metrics.json")
    parser.add_argument("overrides", nargs="*", help="field=value config overrides")
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    args = parse_args(argv)
    saved = pathlib.Path(args.model).parent / "config.json"
    if args.config is None and saved.exists():
        config = Config(json.loads(saved.read_text()))
        args.task = args.task or config.get("task")
        if config.get("task") != args.task:
            raise ValueError(f"{saved} is a config for task {config.get('task')!r}, not {args.task!r}; "
                             "pass --config.")
        import vlbeit_keras

        # Task settings added after the run was made take their defaults (and
        # can be overridden like the recorded ones).
        spec = vlbeit_keras.get_registry("heads").get(args.task)
        config.setdefault("task_config", Config())
        for key, value in dict(spec.default_config).items():
            config.task_config.setdefault(key, value)
        apply_overrides(config, args.overrides)
    else:
        if args.task is None:
            raise SystemExit(f"No config.json next to {args.model}: pass --task (and --config).")
        sys.path.insert(0, str(REPO / "recipes"))
        from finetune import build_config

        config = build_config(args.task, args.config, args.smoke, args.overrides)

    from vlbeit_keras.training.finetuning import format_metrics
    from vlbeit_keras.training.finetuning import run_evaluation

    result = run_evaluation(config, args.model, tokenizer_path=args.tokenizer, output_dir=args.output)
    print(format_metrics(result["metrics"], result["baseline"]))
    print(f"predictions: {result['predictions']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
