"""VL-BEiT pretraining (MLM + MIM + MVLM) from a config: README's main command.

    KERAS_BACKEND=jax python recipes/pretrain.py                  # demo corpus, minutes on CPU
    python recipes/pretrain.py --config recipes/configs/pretrain.py:nlvr
    python recipes/pretrain.py --smoke                            # seconds, same code path
    python recipes/pretrain.py schedule.total_steps=2000 data.pair_batch_size=32

Killed and restarted with the same command, a run resumes from its last
checkpoint (``<workdir>/backup``). Outputs in ``<workdir>``: ``backbone.keras``,
``backbone.weights.h5``, ``preset/`` (keras-hub preset with the tokenizer),
``visual_tokenizer.keras``, ``vocab.txt``, ``metrics.jsonl``, ``tensorboard/``,
``summary.json``. See docs/pretraining.md.
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlbeit_keras.config import apply_overrides  # noqa: E402
from vlbeit_keras.config import load_config  # noqa: E402

DEFAULT_CONFIG = str(REPO / "recipes" / "configs" / "pretrain.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=f"{DEFAULT_CONFIG}:demo",
                        help="config file[:variant] (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny, seconds-long run of the same path")
    parser.add_argument("--workdir", default=None, help="output directory (default: from the config)")
    parser.add_argument("overrides", nargs="*", help="field=value config overrides")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    spec = args.config
    if args.smoke:
        spec = spec + (",smoke" if ":" in spec else ":demo,smoke")
    config = load_config(spec)
    apply_overrides(config, args.overrides)
    if args.workdir:
        config.workdir = args.workdir

    from vlbeit_keras.training.health import format_health
    from vlbeit_keras.training.pretraining import run_pretraining

    summary = run_pretraining(config)
    first, last = summary["first_epoch"], summary["last_epoch"]
    keys = [k for k in (last or {}) if k.endswith(("_loss", "_accuracy"))]
    print(f"\nsteps {summary['steps']}/{summary['total_steps']}, {summary['seconds_this_run']} s this run")
    print(f"{'metric':<22}{'first epoch':>12}{'last epoch':>12}")
    for key in sorted(keys):
        print(f"{key:<22}{first[key]:>12.4f}{last[key]:>12.4f}")
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
