"""The ``vlbeit_keras`` command line: argparse subcommands, one module each.

A command module defines:

- ``NAME``: the subcommand (``python -m vlbeit_keras NAME``);
- ``HELP``: one line for ``--help``;
- ``add_arguments(parser)``: adds its options to its ``argparse`` sub-parser;
- ``run(args) -> int``: does the work and returns the exit status.

To add a command, write such a module and append its import path to
:data:`COMMANDS`. Modules are imported only when the parser is built, and
``import vlbeit_keras`` (which loads the plugins) only when a command runs.
"""

import argparse
import importlib
import sys

COMMANDS = (
    "vlbeit_keras.cli.plugins",
    "vlbeit_keras.cli.convert",
    "vlbeit_keras.cli.export",
)


def build_parser(commands=COMMANDS):
    """The top-level parser with one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="python -m vlbeit_keras",
        description="VL-BEiT on Keras 3: command-line tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for path in commands:
        module = importlib.import_module(path)
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return int(args._run(args) or 0)
