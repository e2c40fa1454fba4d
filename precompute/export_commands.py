"""``export`` and ``export-vectors``: a study's tables and steering vectors as files.

Examples:
    trustdyn export --format parquet --out results/
    trustdyn export --format csv --tables probe_results,steering_evals --out results-csv/
    trustdyn export-vectors --suite builtin-default --checkpoint chat --dataset truthfulqa \
        --layers 4-6 --out truthfulqa-chat

Importing this module is cheap (no torch, pandas or DuckDB): the handlers import the
library when they run, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``export-vectors`` subcommands (handler in ``args.handler``)."""
    tables = sub.add_parser(
        "export", help="write every table of a study file as Parquet or CSV, with a manifest",
        description="Write the study file's tables into a folder, one file per table, plus "
        "manifest.json (schema version, row counts, column names and types). Column "
        "meanings: the README's 'Exported tables' section.")
    _add_db(tables)
    tables.add_argument("--out", type=Path, default=Path("trustdyn-tables"),
                        help="output folder (default: %(default)s)")
    tables.add_argument("--format", default="parquet",
                        help="parquet or csv (default: %(default)s)")
    tables.add_argument("--tables", default=None,
                        help="comma-separated tables to write (default: all)")
    tables.add_argument("--force", action="store_true",
                        help="write into a non-empty folder, replacing same-named files")
    tables.set_defaults(handler=run_export)

    vectors = sub.add_parser(
        "export-vectors", help="write stored steering vectors as safetensors and a GGUF "
        "control vector (llama.cpp --control-vector, repeng)",
        description="Write one checkpoint's stored mean-difference vectors for one dataset "
        "as <out>.safetensors (every chosen layer, provenance in the metadata) and "
        "<out>.gguf (a llama.cpp/repeng control vector: direction.<N> is added to the "
        "output of decoder block N; layer 0 cannot be steered there and is left out).")
    _add_db(vectors)
    vectors.add_argument("--suite", required=True, help="suite in the study file")
    vectors.add_argument("--checkpoint", required=True,
                         help="checkpoint whose vectors are written (e.g. the chat model)")
    vectors.add_argument("--dataset", required=True, help="probe dataset, e.g. truthfulqa")
    vectors.add_argument("--layers", default="all",
                         help="layers, e.g. 5 or 3,5-7 (default: %(default)s stored layers)")
    vectors.add_argument("--scaling", default="target",
                         help="unit of strength written: target (the chat model's σ at "
                         "the layer, the study's default), source-sigma (the checkpoint's "
                         "own σ, the paper's) or unit (the unit direction); default "
                         "%(default)s")
    vectors.add_argument("--toward", choices=("desirable", "0", "1"), default="desirable",
                         help="label a positive strength moves toward (default: the "
                         "dataset card's desirable label)")
    vectors.add_argument("--out", type=Path, default=None,
                         help="output path without suffix (default: "
                         "<suite>_<checkpoint>_<dataset>_<scaling> here)")
    vectors.add_argument("--force", action="store_true", help="replace existing files")
    vectors.set_defaults(handler=run_export_vectors)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None,
                        help="study file (default: the default study's file)")


def _study_file(args: argparse.Namespace) -> Path:
    from trustdyn.paths import default_study_path

    return Path(args.db) if args.db is not None else default_study_path()


def run_export(args: argparse.Namespace) -> int:
    """Run ``export``; print what was written. Errors are ``ValueError`` (one line)."""
    from trustdyn.export import export_tables

    names = None if args.tables is None else [t.strip() for t in args.tables.split(",")
                                              if t.strip()]
    result = export_tables(_study_file(args), args.out, args.format, names, force=args.force)
    for table, rows in result.rows.items():
        print(f"{table:<18} {rows:>9,} rows")
    print(f"wrote {len(result.rows)} {args.format} files and {result.manifest}")
    return 0


def run_export_vectors(args: argparse.Namespace) -> int:
    """Run ``export-vectors``; print the files and how to use them."""
    from trustdyn.export import VectorRequest, export_vectors, parse_layers
    from trustdyn.store import Store

    request = VectorRequest(
        suite=args.suite, checkpoint=args.checkpoint, dataset=args.dataset,
        layers=parse_layers(args.layers), scaling=args.scaling,
        toward_label=None if args.toward == "desirable" else int(args.toward))
    out = args.out or Path("_".join(
        part.replace("/", "-") for part in (args.suite, args.checkpoint, args.dataset,
                                            args.scaling)))
    result = export_vectors(Store(_study_file(args)), request, out, force=args.force)
    print(f"wrote {result.safetensors} and {result.gguf} (layers "
          f"{', '.join(map(str, result.gguf_layers))}; a positive strength moves toward "
          f"label {result.toward_label}; strength 1 = 1 unit of {args.scaling})")
    if result.skipped:
        print("layer 0 is in the safetensors file only: llama.cpp control vectors cannot "
              "steer the output of block 0")
    print(f"llama.cpp: llama-cli -m MODEL.gguf --control-vector-scaled {result.gguf} 1.0")
    return 0
