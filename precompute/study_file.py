"""Study files: one TOML file that says what ``trustdyn run --config`` computes, checked whole.

A study file names the suite (``[suite]``), which of its checkpoints (``[revisions]``), the
probe datasets (``[datasets]``: builtin names, the user's table files with their column
mapping and card, hub datasets ``repo:split``), the study sizes (``[sizes]``: a preset and
overrides of :class:`~precompute.study.StudyConfig` fields), where models run (``[run]``)
and how they load (``[model]``). :func:`read_study_file` parses all of it, reads every
user data file through the datasets package's validation, and checks revision names
against suites whose revisions are known offline, before torch is imported, a model loads
or a file is written; it raises one :class:`StudyFileError` that lists every problem, one
line each (unknown key with a close match, wrong type, bad value, missing file, malformed
data file with its row). Relative paths are relative to the study file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from precompute.study import SIZE_PRESETS, StudyConfig, sizes_for, study_config
from trustdyn.datasets import (
    DIMENSIONS,
    CardMeta,
    DatasetError,
    UserDataset,
    resolve_name,
)
from trustdyn.paths import default_study_path
from trustdyn.suites import (
    SMOLLM2_SUITE,
    RevisionSelection,
    Suite,
    SuiteError,
    get_suite,
    list_suites,
    select_revisions,
)
from trustdyn.suites.base import LAYERS_PATH
from trustdyn.suites.builtin_presets import PRESETS
from trustdyn.suites.hub import PUBLIC_SUITES, public_suite
from trustdyn.suites.selection import parse_step_range

if TYPE_CHECKING:
    from trustdyn.store import Store

T = TypeVar("T")

EXECUTORS = ("local", "ray")
"""Where checkpoints run: this process or one Ray task each."""

_CARD_KEYS = ("dimension", "label1_meaning", "label0_meaning", "desirable_label",
              "harmful_label", "source", "upstream", "license", "notes")
_READ_KEYS = ("text_column", "label_column", "group_column", "on_conflict")
# Every StudyConfig field is a [sizes] key, except those other sections set.
_SIZE_KEYS = tuple(f.name for f in dataclasses.fields(StudyConfig)
                   if f.name not in ("datasets", "user_datasets", "device", "dtype"))
_SECTIONS: dict[str, tuple[str, ...]] = {
    "suite": ("name", "preset"),
    "revisions": ("names", "steps", "every", "log_spaced"),
    "datasets": ("builtin", "file", "hub"),
    "sizes": ("preset", *_SIZE_KEYS),
    "run": ("db", "device", "dtype", "executor", "workers", "ray_address", "cpus_per_task",
            "gpus_per_task", "max_retries"),
    "model": ("trust_remote_code", "layers", "delete_after"),
}


class StudyFileError(ValueError):
    """Every problem found in a study file (and the flags given with it), one per line."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n  ".join(problems)
        super().__init__(f"{source}: {len(problems)} problem(s); nothing was run or written:"
                         f"\n  {listed}")


@dataclass(frozen=True)
class SuiteSection:
    """``[suite]``: whose checkpoints the study reads.

    Attributes:
        name: ``builtin``, ``builtin-<preset>``, ``smollm2-instruct``, a public hub suite
            (``amber``, ``pythia-160m``...), or a folder / suite ``.toml`` file (absolute).
        preset: Built-in pre-training preset (``smoke``, ``default``, ``classroom``); only
            for the built-in suite, where it defaults to ``default``.
    """

    name: str
    preset: str | None = None

    @property
    def builtin(self) -> bool:
        """Whether this is the built-in pre-training run."""
        return self.name == "builtin" or self.name.startswith("builtin-")


@dataclass(frozen=True)
class RunSection:
    """``[run]``: where the study file goes and where checkpoints run.

    Attributes:
        db: The DuckDB study file (absolute); ``None`` = the default study file.
        executor: ``local`` (this machine) or ``ray`` (one task per checkpoint).
        workers: Local executor: checkpoints computed at once in worker processes.
        ray_address: Ray cluster to join (``auto``...); ``None`` starts a local one.
        cpus_per_task: CPUs each Ray task reserves.
        gpus_per_task: GPUs each Ray task reserves.
        max_retries: Extra attempts of a Ray task after a crash or transient error.
    """

    db: Path | None = None
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 2


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: how checkpoints load.

    Attributes:
        trust_remote_code: Run modelling code shipped with hub checkpoints (only for
            repositories you trust).
        layers: Dotted path to the decoder blocks (``backbone.blocks``) for models whose
            blocks trustdyn does not find itself; ``None`` = the known places.
        delete_after: Remove each hub checkpoint from the local cache once its units
            are written.
    """

    trust_remote_code: bool = False
    layers: str | None = None
    delete_after: bool = False


@dataclass(frozen=True)
class StudyFile:
    """A validated study file.

    Attributes:
        source: The file it was read from.
        suite: Which suite.
        revisions: Which of its checkpoints.
        config: Datasets (the user's with their specs), sizes, device and dtype.
        run: Where results go and where checkpoints run.
        model: How checkpoints load.
    """

    source: Path
    suite: SuiteSection
    revisions: RevisionSelection
    config: StudyConfig
    run: RunSection
    model: ModelSection


class _Reader:
    """Collects problems while reading tables of the file; ``where`` names the section."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}".replace("\n", "\n    "))

    def keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        """Report every key of ``table`` not in ``allowed``, with the closest known one."""
        for key in table:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"known keys: {', '.join(allowed)}")
            self.add(where, f"unknown key {key!r}; {hint}")

    def get(self, table: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...],
            where: str, default: T) -> T:
        """Return ``table[key]`` if it has type ``kind`` (bools are not numbers), else report."""
        if key not in table:
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.add(where, f"{key} must be {names}, got {_describe(value)}")
            return default
        return value  # type: ignore[return-value]

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.add(where, f"[{key}] must be a table, got {_describe(value)}")
            return {}
        return value

    def path(self, text: str) -> Path:
        return (self.base / Path(text).expanduser()).resolve()


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table", type(None): "left out"}


def _describe(value: object) -> str:
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {value!r}"


def _suite_section(reader: _Reader, table: dict[str, Any]) -> SuiteSection | None:
    where = "[suite]"
    reader.keys(table, _SECTIONS["suite"], where)
    name = reader.get(table, "name", str, where, "")
    preset = reader.get(table, "preset", str, where, "") or None
    if not name:
        reader.add(where, "name is required: builtin, smollm2-instruct, "
                   f"{', '.join(PUBLIC_SUITES)}, a folder or a suite .toml file")
        return None
    section = SuiteSection(name, preset)
    if section.builtin:
        named = name.removeprefix("builtin").removeprefix("-") or None
        for chosen in {named, preset} - {None}:
            if chosen not in PRESETS:
                reader.add(where, f"no built-in preset {chosen!r}; use one of "
                           f"{', '.join(PRESETS)}")
        if named and preset and named != preset:
            reader.add(where, f"name {name!r} and preset {preset!r} disagree; give one")
        return SuiteSection("builtin", named or preset or "default")
    if preset is not None:
        reader.add(where, f"preset {preset!r} only applies to the built-in suite; study "
                   "sizes go in [sizes] preset")
    if name in (SMOLLM2_SUITE, *PUBLIC_SUITES):
        return section
    path = reader.path(name)
    if path.is_dir() or (path.suffix == ".toml" and path.is_file()):
        return SuiteSection(str(path))
    reader.add(where, f"unknown suite {name!r} (no such folder or .toml file at {path}); "
               f"known suites: {', '.join(list_suites())}")
    return None


def _revisions(reader: _Reader, table: dict[str, Any]) -> RevisionSelection:
    where = "[revisions]"
    reader.keys(table, _SECTIONS["revisions"], where)
    names = reader.get(table, "names", list, where, [])
    steps = _step_range(reader, table.get("steps"), where)
    every = reader.get(table, "every", int, where, 1)
    log_spaced = reader.get(table, "log_spaced", (int, type(None)), where, None)
    try:
        given = "names" in table and isinstance(table["names"], list)
        return RevisionSelection(revisions=tuple(names) if given else None,
                                 steps=steps, every=every, log_spaced=log_spaced)
    except SuiteError as exc:
        reader.add(where, str(exc))
        return RevisionSelection()


def _step_range(reader: _Reader, value: object, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_step_range(value)
        except SuiteError as exc:
            reader.add(where, str(exc).replace("--steps", "steps"))
            return None
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return value[0], value[1]
    reader.add(where, f"steps must be [first, last] (inclusive) or 'first:last', "
               f"got {_describe(value)}")
    return None


def _check_revisions(reader: _Reader, suite: SuiteSection, selection: RevisionSelection) -> None:
    """Check the selection against a public suite's revision table (the one offline case)."""
    if suite.name in PUBLIC_SUITES and selection != RevisionSelection():
        try:
            public_suite(suite.name, selection)
        except SuiteError as exc:
            reader.add("[revisions]", str(exc))


def _builtin_names(reader: _Reader, table: dict[str, Any]) -> list[str]:
    names = reader.get(table, "builtin", list, "[datasets]", [])
    resolved = []
    for name in names:
        try:
            resolved.append(resolve_name(str(name)))
        except DatasetError as exc:
            reader.add("[datasets] builtin", str(exc).split(" Load your own")[0])
    return resolved


def _card(reader: _Reader, entry: dict[str, Any], name: str, where: str) -> CardMeta | None:
    fields: dict[str, Any] = {}
    for key in _CARD_KEYS:
        kind: type | tuple[type, ...] = int if key.endswith("_label") else str
        if key in entry:
            fields[key] = reader.get(entry, key, kind, where, None)
    try:
        return CardMeta(name=name, **{k: v for k, v in fields.items() if v is not None})
    except DatasetError as exc:
        reader.add(where, str(exc))
        return None


def _user_dataset(reader: _Reader, entry: object, index: int, kind: str) -> UserDataset | None:
    where = f"[[datasets.{kind}]] #{index + 1}"
    if not isinstance(entry, dict):
        reader.add(where, f"must be a table, got {_describe(entry)}")
        return None
    source_key = "path" if kind == "file" else "dataset"
    extra = ("format",) if kind == "file" else ("revision",)
    reader.keys(entry, ("name", source_key, *extra, *_READ_KEYS, *_CARD_KEYS), where)
    name = reader.get(entry, "name", str, where, "")
    source = reader.get(entry, source_key, str, where, "")
    where = f"{where} ({name or 'unnamed'})"
    if not name or not source:
        reader.add(where, f"name and {source_key} are required")
        return None
    card = _card(reader, entry, name, where)
    if kind == "file" and not reader.path(source).is_file():
        reader.add(where, f"no such file {reader.path(source)}")
        return None
    read = {key: reader.get(entry, key, str, where, "") for key in (*_READ_KEYS, *extra)}
    options: dict[str, Any] = {k: v for k, v in read.items() if v}
    if kind == "file":
        options["path"] = str(reader.path(source))
    else:
        options["hub"] = source
    try:
        return UserDataset(meta=card, **options) if card is not None else None
    except DatasetError as exc:
        reader.add(where, str(exc))
        return None


def _datasets(reader: _Reader, table: dict[str, Any]) -> tuple[list[str], list[UserDataset]]:
    reader.keys(table, _SECTIONS["datasets"], "[datasets]")
    names = _builtin_names(reader, table)
    user: list[UserDataset] = []
    for kind in ("file", "hub"):
        entries = reader.get(table, kind, list, "[datasets]", [])
        user += [spec for i, entry in enumerate(entries)
                 if (spec := _user_dataset(reader, entry, i, kind)) is not None]
    reserved = set(names) | set(DIMENSIONS) | set(DIMENSIONS.values())
    for spec in user:
        if spec.name in reserved:
            reader.add("[datasets]", f"dataset name {spec.name!r} is taken by a builtin "
                       "dataset or dimension; give yours another name")
    every = [*names, *(spec.name for spec in user)]
    repeated = sorted({n for n in every if every.count(n) > 1})
    if repeated:
        reader.add("[datasets]", f"dataset(s) named more than once: {', '.join(repeated)}")
    if table and not every:
        reader.add("[datasets]", "names no dataset; list builtin ones or add a "
                   "[[datasets.file]] or [[datasets.hub]] table")
    return every, user


def _check_rows(reader: _Reader, user: list[UserDataset], kind: str) -> None:
    """Read each user dataset of ``kind`` (file or hub) through the shared validation."""
    for spec in user:
        if bool(spec.path) == (kind == "file"):
            try:
                spec.load()
            except DatasetError as exc:
                reader.add(f"dataset {spec.name!r}", str(exc))


def _sizes(reader: _Reader, table: dict[str, Any], suite: SuiteSection | None
           ) -> tuple[str | None, dict[str, Any]]:
    where = "[sizes]"
    reader.keys(table, _SECTIONS["sizes"], where)
    preset = reader.get(table, "preset", str, where, "") or None
    if preset is not None and preset not in SIZE_PRESETS:
        reader.add(where, f"no study sizes {preset!r}; use one of {', '.join(SIZE_PRESETS)}")
        preset = None
    if preset is None and suite is not None and suite.builtin:
        preset = suite.preset  # the built-in run's own preset names matching sizes
    overrides = {key: table[key] for key in _SIZE_KEYS if key in table}
    if overrides.get("n_per_dataset") == "all":
        overrides["n_per_dataset"] = None
    if overrides.get("steer_eval") == "none":
        overrides["steer_eval"] = None
    for key in ("stages", "layers"):
        if isinstance(overrides.get(key), list):
            overrides[key] = tuple(overrides[key])
    return sizes_for(suite.name, preset) if suite else preset, overrides


def _run_section(reader: _Reader, table: dict[str, Any]) -> tuple[RunSection, dict[str, str]]:
    where = "[run]"
    reader.keys(table, _SECTIONS["run"], where)
    db = reader.get(table, "db", str, where, "")
    executor = reader.get(table, "executor", str, where, "local")
    if executor not in EXECUTORS:
        reader.add(where, f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    number = (int, float)
    section = RunSection(
        db=reader.path(db) if db else None, executor=executor,
        workers=reader.get(table, "workers", int, where, 1),
        ray_address=reader.get(table, "ray_address", str, where, "") or None,
        cpus_per_task=float(reader.get(table, "cpus_per_task", number, where, 1.0)),
        gpus_per_task=float(reader.get(table, "gpus_per_task", number, where, 0.0)),
        max_retries=reader.get(table, "max_retries", int, where, 2),
    )
    if section.cpus_per_task <= 0 or section.gpus_per_task < 0 or section.max_retries < 0:
        reader.add(where, "cpus_per_task must be > 0, gpus_per_task and max_retries >= 0")
    if section.workers < 1 or (section.workers > 1 and executor == "ray"):
        reader.add(where, f"workers must be >= 1 and only with executor = 'local' (Ray "
                   f"schedules its own tasks), got {section.workers}")
    loading = {key: reader.get(table, key, str, where, "") for key in ("device", "dtype")}
    return section, {k: v for k, v in loading.items() if v}


def _model_section(reader: _Reader, table: dict[str, Any]) -> ModelSection:
    where = "[model]"
    reader.keys(table, _SECTIONS["model"], where)
    layers = reader.get(table, "layers", str, where, "") or None
    if layers is not None and not LAYERS_PATH.fullmatch(layers):
        reader.add(where, f"layers {layers!r} is not a dotted attribute path such as "
                   "'backbone.blocks'")
    return ModelSection(trust_remote_code=reader.get(table, "trust_remote_code", bool, where,
                                                     False),
                        layers=layers,
                        delete_after=reader.get(table, "delete_after", bool, where, False))


def _parse(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StudyFileError(path, [f"no such study file {path}"])
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyFileError(path, [f"not valid TOML: {exc}"]) from None


def read_study_file(path: str | Path, flag_problems: list[str] | None = None) -> StudyFile:
    """Read and validate a study file; ``flag_problems`` (from the command line) join its own.

    Raises:
        StudyFileError: listing every problem found, one per line.
    """
    source = Path(path).expanduser().resolve()
    document = _parse(source)
    reader = _Reader(source.parent)
    reader.problems += flag_problems or []
    reader.keys(document, tuple(_SECTIONS), "top level")
    tables = {name: reader.table(document, name, "top level") for name in _SECTIONS}
    suite = _suite_section(reader, tables["suite"])
    revisions = _revisions(reader, tables["revisions"])
    if suite is not None:
        _check_revisions(reader, suite, revisions)
    names, user = _datasets(reader, tables["datasets"])
    _check_rows(reader, user, "file")
    sizes, overrides = _sizes(reader, tables["sizes"], suite)
    run, loading = _run_section(reader, tables["run"])
    model = _model_section(reader, tables["model"])
    config = _config(reader, sizes, overrides, names, user, loading)
    if suite is not None:
        _check_layers(reader, suite, config)
    if not reader.problems:
        _check_rows(reader, user, "hub")  # needs the network or the hub cache: last
    if reader.problems or suite is None:
        raise StudyFileError(source, reader.problems)
    return StudyFile(source, suite, revisions, config, run, model)


def _check_layers(reader: _Reader, suite: SuiteSection, config: StudyConfig) -> None:
    """Check ``layers`` against the built-in run's depth (other models: when they load)."""
    preset = PRESETS.get(suite.preset or "") if suite.builtin else None
    if preset is None or config.layers is None:
        return
    missing = sorted(layer for layer in config.layers
                     if isinstance(layer, int) and layer >= preset.layers)
    if missing:
        reader.add("[sizes]", f"layers {missing} do not exist: the built-in {suite.preset!r} "
                   f"model has {preset.layers} decoder blocks (0 to {preset.layers - 1})")


def _config(reader: _Reader, sizes: str | None, overrides: dict[str, Any], names: list[str],
            user: list[UserDataset], loading: dict[str, str]) -> StudyConfig:
    base = study_config(sizes)
    if names:
        overrides = {**overrides, "datasets": tuple(names), "user_datasets": tuple(user)}
    settings: dict[str, Any] = {**overrides, **loading}
    config = dataclasses.replace(base, **settings)
    for problem in config.problems():
        section = "[run]" if problem.startswith(("device", "dtype")) else "[sizes]"
        reader.add(section, problem)
    return config


def load_suite(study: StudyFile, *, pretrain: bool, progress: bool = True) -> Suite:
    """Return the study's suite narrowed to its revisions.

    Args:
        study: The validated study file.
        pretrain: Pre-train the built-in run first if it is not finished (``run`` does;
            ``status`` only reads what exists).
        progress: Show pre-training progress.

    Raises:
        SuiteError: the suite cannot be loaded or the selection names unknown revisions.
    """
    if study.suite.builtin and pretrain:
        from trustdyn.suites.builtin import pretrain as pretrain_run

        suite = pretrain_run(study.suite.preset or "default", progress=progress)
        return select_revisions(suite, study.revisions)
    return get_suite(study.suite.name, preset=study.suite.preset, selection=study.revisions,
                     layers=study.model.layers, trust_remote_code=study.model.trust_remote_code)


_WITH_CONFIG = {"config", "db", "shard", "quiet", "verbose", "command", "handler", "flag_parser",
                "study_file"}
"""Flags (argparse destinations) that may accompany ``--config``; the file sets the rest."""


def flag_problems(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Return one line per flag given next to ``--config`` that the study file should set."""
    return [f"command line: --{dest.replace('_', '-')} is given next to --config; set it in "
            "the study file instead (only --db, --shard and --quiet go with --config)"
            for dest, value in vars(args).items()
            if dest not in _WITH_CONFIG and value != parser.get_default(dest)]


def check_study_args(args: argparse.Namespace) -> None:
    """Validate ``args.config`` and the flags beside it; keep the result on ``args``.

    Sets ``args.study_file`` and, from the file, the executor and model options of
    ``args``, so the command runs exactly what the file says. Imports nothing heavy, so a
    broken file fails in well under a second.

    Raises:
        StudyFileError: listing every problem of the file and the flags.
    """
    study = read_study_file(args.config, flag_problems(args, args.flag_parser))
    run = study.run
    if run.executor == "ray" and getattr(args, "shard", "0/1") != "0/1":
        raise StudyFileError(study.source, ["[run] executor = 'ray' schedules every "
                                            "checkpoint itself; drop --shard"])
    args.study_file = study
    args.executor, args.ray_address, args.workers = run.executor, run.ray_address, run.workers
    args.cpus_per_task, args.gpus_per_task = run.cpus_per_task, run.gpus_per_task
    args.max_retries, args.delete_after = run.max_retries, study.model.delete_after


def resolve_study_file(args: argparse.Namespace, *, pretrain: bool
                       ) -> tuple[Suite, Store, StudyConfig]:
    """Return the suite, study file and config of ``args.study_file`` (see above).

    ``--db`` wins over the file's ``[run] db``.

    Raises:
        SuiteError: the suite cannot be loaded.
    """
    from trustdyn.store import Store

    study: StudyFile = args.study_file
    store = Store(args.db or study.run.db or default_study_path())
    progress = not getattr(args, "quiet", False)  # `status` has no --quiet
    return load_suite(study, pretrain=pretrain, progress=progress), store, study.config
