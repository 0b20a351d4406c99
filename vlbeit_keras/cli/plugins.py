"""``python -m vlbeit_keras plugins``: list plugins and everything they registered.

For every registry kind (experts, objectives, heads, datasets, visual
tokenizers, checkpoint converters) it prints each registered name, the object
and the plugin that provided it (plugin name, distribution, module), then the
loaded plugins in loading order and the external plugins that failed (with
``--tracebacks``, their original traceback). ``--json`` prints the same data
as one JSON object (:meth:`vlbeit_keras.plugins.PluginManager.summary`).
"""

import json

NAME = "plugins"
HELP = "List loaded plugins and every expert, objective, head, data source, visual tokenizer and converter they registered."

TITLES = {
    "experts": "Experts (register_experts)",
    "objectives": "Pretraining objectives (register_objectives)",
    "heads": "Heads / tasks (register_heads)",
    "datasets": "Data sources (register_datasets)",
    "visual_tokenizers": "Visual tokenizers (register_visual_tokenizers)",
    "checkpoint_converters": "Checkpoint converters (register_checkpoint_converters)",
}


def add_arguments(parser):
    """Add the `plugins` command's options to its argparse ``parser``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--kind", action="append", choices=sorted(TITLES),
        help="list only this registry kind (repeatable)",
    )
    parser.add_argument("--tracebacks", action="store_true", help="print the full traceback of failed plugins")
    parser.add_argument(
        "--strict", action="store_true",
        help="exit with status 1 when a plugin failed or a registry has a duplicate name",
    )


def _table(rows, headers, indent="  "):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def format_text(summary, kinds, tracebacks=False):
    """The human-readable listing of a :meth:`PluginManager.summary`."""
    lines = []
    for kind in kinds:
        entries = summary["registries"][kind]
        lines.append(f"{TITLES[kind]}: {len(entries)}")
        if kind in summary["errors"]:
            lines.append(f"  ERROR: {summary['errors'][kind]}")
        if entries:
            rows = [(e["name"], e["object"], e["plugin"], e["distribution"], e["module"]) for e in entries]
            lines += _table(rows, ("NAME", "OBJECT", "PLUGIN", "DISTRIBUTION", "MODULE"))
        else:
            lines.append("  (none)")
        lines.append("")
    plugins = summary["plugins"]
    lines.append(f"Plugins, in loading order: {len(plugins)}")
    lines += _table(
        [(p["name"], p["distribution"], p["module"]) for p in plugins],
        ("PLUGIN", "DISTRIBUTION", "MODULE"),
    )
    lines.append("")
    failures = summary["failures"]
    lines.append(f"Failed plugins: {len(failures)}")
    for f in failures:
        lines.append(f"  {f['name']} ({f['distribution']}) failed during {f['stage']}: {f['summary']}")
        if tracebacks:
            lines += ["    " + ln for ln in f["traceback"].rstrip().splitlines()]
    if failures and not tracebacks:
        lines.append("  (run with --tracebacks for the original tracebacks)")
    env = {k: v for k, v in summary["environment"].items() if v is not None}
    if env:
        lines.append("")
        lines.append("Environment: " + ", ".join(f"{k}={v!r}" for k, v in env.items()))
    return "\n".join(lines)


def run(args):
    """Run the `plugins` command with the parsed ``args``; returns the process exit code."""
    import vlbeit_keras  # noqa: F401 - loads the plugins
    from vlbeit_keras.plugins import manager

    summary = manager.summary()
    kinds = args.kind or list(TITLES)
    if args.json:
        summary["registries"] = {k: summary["registries"][k] for k in kinds}
        print(json.dumps(summary, indent=2))
    else:
        print(format_text(summary, kinds, tracebacks=args.tracebacks))
    if args.strict and (summary["failures"] or summary["errors"]):
        return 1
    return 0
