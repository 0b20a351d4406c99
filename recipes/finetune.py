"""Fine-tune VL-BEiT on a downstream task (VQA, NLVR, NLVR2, retrieval, classification).

    KERAS_BACKEND=jax python recipes/finetune.py --task vqa        # demo corpus, minutes on CPU
    python recipes/finetune.py --task nlvr --config recipes/configs/finetune.py:nlvr1 \\
        --checkpoint runs/pretrain_nlvr/preset
    python recipes/finetune.py --task nlvr --config recipes/configs/finetune.py:nlvr1 \\
        --checkpoint runs/pretrain_nlvr/preset model.load_weights=false   # random-init baseline
    python recipes/finetune.py --task retrieval --smoke               # seconds, same code path
    python recipes/finetune.py --task vqa schedule.total_steps=300 optimizer.learning_rate=5e-4

``--task`` is any registered task (``vlbeit_keras.get_registry("heads").names()``,
plugins included). ``--checkpoint`` is a keras-hub preset directory (the
pretraining recipe's ``<workdir>/preset``, with its tokenizer), a backbone
``.keras`` file, or ``none`` (random initialisation). Killed and restarted with
the same command, a run resumes from its last checkpoint (``<workdir>/backup``).
Outputs in ``<workdir>``: ``model.keras``, ``vocab.txt``, the predictions file
in the benchmark's format, ``metrics.json`` (metrics and the trivial
baseline), ``metrics.jsonl``, ``tensorboard/``, ``config.json``,
``summary.json``. See docs/finetuning.md.
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlbeit_keras.config import apply_overrides  # noqa: E402
from vlbeit_keras.config import load_config  # noqa: E402

DEFAULT_CONFIG = str(REPO / "recipes" / "configs" / "finetune.py")


def build_config(task, config_spec=None, smoke=False, overrides=(), checkpoint=None, workdir=None):
    """The run config: ``get_config("<task>,<variant>[,smoke]")`` of the config
    file, the task's fields in ``task_config``, then overrides, checkpoint and
    workdir. Shared with ``recipes/evaluate.py``."""
    import vlbeit_keras

    spec = vlbeit_keras.get_registry("heads").get(task)  # unknown names raise, listing the known ones
    path, _, variant = (config_spec or DEFAULT_CONFIG).partition(":")
    arg = ",".join(p for p in (task, variant or "demo", "smoke" if smoke else "") if p)
    config = load_config(f"{path}:{arg}")
    # Every task field is listed, so `task_config.<field>=value` overrides work.
    config.task_config = {**dict(spec.default_config), **dict(config.task_config)}
    apply_overrides(config, overrides)
    if checkpoint is not None:
        config.checkpoint = "" if checkpoint.lower() in ("", "none") else checkpoint
    if workdir:
        config.workdir = workdir
    return config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, help="registered task name (vqa, nlvr2, nlvr, retrieval, ...)")
    parser.add_argument("--checkpoint", default=None,
                        help="preset directory, backbone .keras file, or 'none' (default: from the config)")
    parser.add_argument("--config", default=None,
                        help=f"config file[:variant] (default: {DEFAULT_CONFIG}:demo)")
    parser.add_argument("--smoke", action="store_true", help="tiny, seconds-long run of the same path")
    parser.add_argument("--workdir", default=None, help="output directory (default: from the config)")
    parser.add_argument("overrides", nargs="*", help="field=value config overrides")
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = build_config(args.task, args.config, args.smoke, args.overrides, args.checkpoint, args.workdir)

    from vlbeit_keras.training.finetuning import format_metrics
    from vlbeit_keras.training.finetuning import run_finetuning
    from vlbeit_keras.training.health import format_health

    summary = run_finetuning(config)
    print(f"\nsteps {summary['steps']}/{summary['total_steps']}, {summary['seconds_this_run']} s this run "
          f"({summary['init']})")
    if summary["metrics"] is not None:
        print(format_metrics(summary["metrics"], summary["baseline"]))
        print(f"predictions: {summary['predictions']}")
    print(format_health(summary.get("health")))
    print(f"outputs in {summary['workdir']}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from vlbeit_keras.training.health import NonFiniteLossError

    try:
        main()
    except NonFiniteLossError as error:
        raise SystemExit(f"training stopped: {error}") from None
