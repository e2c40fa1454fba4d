"""Command line of the pipeline: ``python -m precompute {pretrain,study,run,status,merge}``.

Examples:
    python -m precompute study --preset default
    python -m precompute pretrain --preset default
    python -m precompute run --suite builtin --preset default
    python -m precompute run --suite amber --every 10 --shard 0/8 --db amber-0.duckdb
    python -m precompute merge --db amber.duckdb amber-*.duckdb
    python -m precompute status --suite builtin --preset default
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from precompute import pretrain
from precompute.commands import add_run_commands


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Build trustdyn study files: pre-train the built-in suite, run probes, "
        "information estimates and steering over a checkpoint suite into DuckDB.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    pretrain.register(sub)
    add_run_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run a subcommand; user errors print one line, not a traceback."""
    parser = build_parser()
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
    sys.exit(main())
