"""Command line of trustdyn: ``trustdyn`` or ``python -m precompute``, the same commands.

Examples:
    trustdyn study --preset default
    trustdyn pretrain --preset default
    trustdyn run --suite builtin --preset default
    trustdyn run --suite amber --every 10 --shard 0/8 --db amber-0.duckdb
    trustdyn merge --db amber.duckdb amber-*.duckdb
    trustdyn status --suite builtin --preset default
    trustdyn export --format parquet
    trustdyn app --db study.duckdb

Building the parser imports no model, table or database library (``--help`` is instant
and writes nothing); each handler imports what it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from precompute import app_command, export_commands, pretrain
from precompute.commands import add_run_commands


def build_parser(prog: str = "trustdyn") -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build trustdyn study files: pre-train the built-in suite, run probes, "
        "information estimates and steering over a checkpoint suite into DuckDB; export "
        "them; open the dashboard.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    pretrain.register(sub)
    add_run_commands(sub)
    export_commands.register(sub)
    app_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "trustdyn") -> int:
    """Parse arguments and run a subcommand; user errors print one line, not a traceback."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        # transformers draws its own bars (weight loading, GGUF conversion).
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished units are saved; rerun the same command to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(prog="python -m precompute"))
