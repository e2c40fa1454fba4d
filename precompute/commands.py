"""The ``study``, ``run``, ``status`` and ``merge`` subcommands."""

from __future__ import annotations

import argparse
import contextlib
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from trustdyn.paths import STUDY_FILE, default_study_path, generated_root
from trustdyn.suites import SMOLLM2_SUITE, RevisionSelection, Suite, get_suite, select_revisions
from trustdyn.suites.selection import parse_revision_list, parse_step_range

# The pipeline, the store and the findings pull in torch, transformers, pandas and duckdb:
# they are imported inside the handlers so that building the parser (``--help``) stays fast.
if TYPE_CHECKING:
    from precompute.study import StudyConfig
    from trustdyn.store import Store


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``run``, ``status``, ``study`` and ``merge`` on the CLI."""
    run = sub.add_parser("run", help="run every unfinished unit of a study (resumable)")
    _suite_args(run)
    run.add_argument("--shard", default="0/1",
                     help="i/n: run only checkpoints with ordinal %% n == i")
    run.add_argument("--device", default=None, help="auto, cpu, cuda or mps")
    run.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                     help="model dtype for loading checkpoints")
    run.add_argument("--n-per-dataset", type=int, default=None,
                     help="rows sampled per dataset (default: the preset's)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    model = run.add_argument_group("your own model")
    model.add_argument("--layers-path", default=None, metavar="PATH",
                       help="dotted path to the ModuleList of decoder blocks (e.g. "
                       "backbone.blocks), for models whose blocks are not found")
    model.add_argument("--trust-remote-code", action="store_true",
                       help="run modelling code shipped with the checkpoints (only for "
                       "repositories you trust)")
    model.add_argument("--delete-after", action="store_true",
                       help="remove each hub checkpoint from the Hugging Face cache once all "
                       "its units are written (never local folders or the chat model)")
    run.add_argument("--steer-scaling", choices=("target", "source-sigma"), default=None,
                     help="unit of the steering strength: the chat model's own σ at the "
                     "layer (target, the default: same norm for every vector at the same α) "
                     "or each source checkpoint's σ (source-sigma, the paper's)")
    run.add_argument("--steer-positions", choices=("newest", "all"), default=None,
                     help="where the steering evaluation adds a vector (newest: the "
                     "prompt's last token and every token after it, the default)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where checkpoints run (default: this machine)")
    run.add_argument("--workers", type=_workers, default=1,
                     help="local executor: checkpoints computed at once, each in its own "
                     "process with an equal share of the threads (default 1: this process)")
    ray = run.add_argument_group(
        "Ray executor", "one task per checkpoint on a Ray cluster (optional extra: ray>=2.40)")
    ray.add_argument("--ray-address", default=None,
                     help="cluster to join, e.g. auto (default: start a local one)")
    ray.add_argument("--cpus-per-task", type=float, default=1.0)
    ray.add_argument("--gpus-per-task", type=float, default=0.0)
    ray.add_argument("--max-retries", type=int, default=2,
                     help="extra attempts after a worker crash or transient error")
    run.set_defaults(handler=_run)

    status = sub.add_parser("status", help="print what is done and what is missing")
    _suite_args(status)
    status.set_defaults(handler=_status)

    study = sub.add_parser(
        "study", help="the embedded default study: the built-in suite (pre-trained if needed) "
        "and SmolLM2-135M-Instruct, into one file")
    study.add_argument("--preset", default="default", help="smoke, default or classroom")
    study.add_argument("--db", type=Path, default=None,
                       help=_db_help())
    study.add_argument("--no-smollm2", action="store_true",
                       help="skip SmolLM2-135M-Instruct (its vectors feed the live chat demo)")
    study.add_argument("--workers", type=_workers, default=None,
                       help="built-in suite: checkpoints computed at once in one-thread worker "
                       "processes (default: one per torch thread, at most 4)")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.set_defaults(handler=_study)

    merge = sub.add_parser("merge", help="merge shard study files into one")
    merge.add_argument("--db", type=Path, required=True, help="the merged study file")
    merge.add_argument("shards", type=Path, nargs="+", help="shard study files")
    merge.set_defaults(handler=_merge)


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers: give 1 or more")
    return int(text)


def _suite_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="builtin",
                        help="builtin, smollm2-instruct, a public suite, a folder or a .toml")
    parser.add_argument("--preset", default=None,
                        help="built-in preset (smoke, default, classroom); also sets study sizes")
    revisions = parser.add_argument_group(
        "revision selection", "which checkpoints of the suite to use (the chat model is kept)")
    revisions.add_argument("--revisions", default=None, metavar="A,B,C",
                           help="only these checkpoints (names or hub revisions)")
    revisions.add_argument("--steps", default=None, metavar="FIRST:LAST",
                           help="only checkpoints whose step is in this inclusive range "
                           "(either end may be left out, e.g. 0:5000 or 1000:)")
    revisions.add_argument("--every", type=int, default=1, metavar="K",
                           help="keep every K-th checkpoint of the selection, plus the last")
    revisions.add_argument("--log-spaced", type=int, default=None, metavar="N",
                           help="keep the N checkpoints nearest to log-spaced steps (first "
                           "and last included)")
    parser.add_argument("--db", type=Path, default=None,
                        help=_db_help())
    parser.add_argument("--config", type=Path, default=None,
                        help="a study file (TOML) that sets everything but --db, --shard and "
                        "--quiet; see the README's 'Study files'")
    parser.set_defaults(flag_parser=parser)


def _db_help() -> str:
    # generated_root, not default_study_path: building the parser must not create folders.
    return f"study file (default {generated_root() / STUDY_FILE})"


def _resolve(args: argparse.Namespace) -> tuple[Suite, Store, StudyConfig]:
    from precompute.study import sizes_for, study_config
    from trustdyn.store import Store

    if args.config is not None:
        from precompute.study_file import resolve_study_file

        return resolve_study_file(args, pretrain=args.handler is _run)
    selection = _selection(args)  # checked before anything is pre-trained or written
    if args.suite in ("builtin", None) and args.preset is None:
        args.preset = "default"
    config = study_config(
        sizes_for(args.suite, args.preset),
        device=getattr(args, "device", None), dtype=getattr(args, "dtype", None),
        n_per_dataset=getattr(args, "n_per_dataset", None), seed=getattr(args, "seed", None),
        steer_scaling=getattr(args, "steer_scaling", None),
        steer_positions=getattr(args, "steer_positions", None),
    )
    suite = _load_suite(args, selection)
    return suite, Store(args.db or default_study_path()), config


def _selection(args: argparse.Namespace) -> RevisionSelection:
    """Fold ``--revisions``, ``--steps``, ``--every`` and ``--log-spaced`` into one selection."""
    return RevisionSelection(
        revisions=parse_revision_list(args.revisions) if args.revisions is not None else None,
        steps=parse_step_range(args.steps) if args.steps is not None else None,
        every=args.every, log_spaced=args.log_spaced,
    )


def _load_suite(args: argparse.Namespace, selection: RevisionSelection) -> Suite:
    builtin = args.suite.startswith("builtin")
    if builtin and args.handler is _run:
        from trustdyn.suites.builtin import pretrain

        # The default study starts from nothing: pre-train first (a no-op when finished).
        return select_revisions(pretrain(args.preset, progress=not args.quiet), selection)
    # For other suites --preset names study sizes only, not a built-in preset.
    return get_suite(args.suite, preset=args.preset if builtin else None, selection=selection,
                     layers=getattr(args, "layers_path", None),
                     trust_remote_code=getattr(args, "trust_remote_code", False))


def _check_study_file(args: argparse.Namespace) -> None:
    """Validate ``--config`` whole before anything heavy is imported or written."""
    if args.config is not None:
        from precompute.study_file import check_study_args

        check_study_args(args)


def _run(args: argparse.Namespace) -> int:
    _check_study_file(args)
    from precompute.pipeline import Shard, run_study
    from trustdyn.findings import summarise_probes

    shard = Shard.parse(args.shard)
    if args.executor == "ray" and (shard.count > 1 or args.workers != 1):
        raise SystemExit("--executor ray schedules every checkpoint itself; drop --shard "
                         "and --workers")
    suite, store, config = _resolve(args)
    if args.executor == "ray":
        from precompute.ray_executor import RayOptions, run_study_ray

        options = RayOptions(address=args.ray_address, num_cpus=args.cpus_per_task,
                             num_gpus=args.gpus_per_task, max_retries=args.max_retries)
        report = run_study_ray(suite, store, config, options=options, progress=not args.quiet,
                               delete_after=args.delete_after)
    else:
        report = run_study(suite, store, config, shard=shard, progress=not args.quiet,
                           delete_after=args.delete_after, workers=args.workers)
    print(f"{suite.name}: {report.written} units written, {report.skipped} already done "
          f"-> {store.path}")
    for checkpoint, reason in report.failures or []:
        print(f"  FAILED {checkpoint}: {reason}")
    if args.delete_after:
        print(f"  freed {report.freed_bytes / 1e9:.2f} GB of the Hugging Face cache")
    if report.written and shard.count == 1:
        print(summarise_probes(store, suite.name).to_string(index=False))
    return 1 if report.failures else 0


def _status(args: argparse.Namespace) -> int:
    _check_study_file(args)
    from precompute.pipeline import missing_units

    suite, store, config = _resolve(args)
    missing = missing_units(suite, store, config)
    total = len(suite.all_refs()) * len(config.datasets) * len(config.stages)
    print(f"{suite.name} in {store.path}: {total - len(missing)}/{total} per-checkpoint units done")
    if store.exists():
        units = store.units(suite.name)
        for stage, count in units.groupby("stage").size().items():
            print(f"  {stage:>12}: {count} units")
    for unit in missing[:20]:
        print(f"  missing {unit.checkpoint} / {unit.dataset} / {unit.stage}")
    if len(missing) > 20:
        print(f"  ... and {len(missing) - 20} more")
    return 0


def _study(args: argparse.Namespace) -> int:
    import torch

    from precompute.processes import in_background
    from precompute.study import sizes_for, study_config
    from trustdyn.findings import summarise_probes
    from trustdyn.store import Store
    from trustdyn.suites.builtin import pretrain, suite_name
    from trustdyn.suites.smollm2 import conversion_pending, smollm2_folder

    store = Store(args.db or default_study_path())
    progress = not args.quiet
    # The built-in model is small: one-thread processes use the cores better than threads.
    workers = args.workers or min(4, torch.get_num_threads())
    with contextlib.ExitStack() as stack:
        builtin = pretrain(args.preset, progress=progress)
        # SmolLM2's one-off GGUF conversion is one core's work. Started after pre-training
        # (whose two threads wait on each other when one is interrupted), at the lowest
        # priority it runs in the gaps the built-in suite's stages leave on the cores
        # instead of after them.
        conversion = (stack.enter_context(in_background(partial(smollm2_folder, False)))
                      if not args.no_smollm2 and conversion_pending() else None)
        failed = _run_suite(builtin, store, study_config(args.preset), progress, workers)
        if not args.no_smollm2:
            # One checkpoint: nothing to spread over workers.
            failed |= _run_suite(_smollm2_after(conversion, progress), store,
                                 study_config(sizes_for(SMOLLM2_SUITE, args.preset)),
                                 progress, 1)
    print(f"study file: {store.path}")
    print(summarise_probes(store, suite_name(args.preset)).to_string(index=False))
    return 1 if failed else 0


def _run_suite(suite: Suite, store: Store, config: StudyConfig, progress: bool,
               workers: int) -> bool:
    """Run one suite's study and print what was written; return whether a checkpoint failed."""
    from precompute.pipeline import run_study

    report = run_study(suite, store, config, progress=progress, workers=workers)
    print(f"{suite.name}: {report.written} units written, {report.skipped} already done")
    for checkpoint, reason in report.failures or []:
        print(f"  FAILED {checkpoint}: {reason}")
    return bool(report.failures)


def _smollm2_after(conversion: BaseProcess | None, progress: bool) -> Suite:
    """Return the SmolLM2 suite once its background conversion has ended.

    A conversion that failed there is redone here, where its error is reported.
    """
    from trustdyn.suites.smollm2 import smollm2_suite

    if conversion is not None:
        if conversion.is_alive():
            print("smollm2-instruct: waiting for its conversion, started in the background",
                  flush=True)
        conversion.join()
    return smollm2_suite(progress=progress)


def _merge(args: argparse.Namespace) -> int:
    from precompute.pipeline import merge_studies

    counts = merge_studies(args.db, args.shards)
    print(f"merged {len(args.shards)} files into {args.db}:")
    for table, count in counts.items():
        print(f"  {table:>18}: {count} rows")
    return 0
