"""The ``sermtl`` command line (also ``python cli.py …``).

Each command parses its flags and calls one library function; torch and transformers are
imported only by the commands that need them, so ``sermtl --help`` starts fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from featurestore.audio import DEFAULT_MAX_DURATION
from featurestore.corpora import available_corpora
from featurestore.errors import ConfigError, SermtlError
from featurestore.features import DEFAULT_SSL_MODEL, FEATURES
from featurestore.options import declared
from featurestore.pipeline import ON_ERROR_CHOICES
from featurestore.store.base import STORE_DTYPES, available_backends
from trainer.baseline import FUNCTIONALS
from trainer.baseline import INPUT_NORMS as SVM_INPUT_NORMS
from trainer.folds import PROTOCOLS
from trainer.paper import EXPERIMENTS
from trainer.protocols import Protocol


class NonEmptyPath(click.Path):
    """A path flag or argument that refuses an empty value (``--store ''`` would
    otherwise mean the default store, or the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or folder", param, ctx)
        return super().convert(value, param, ctx)


QUIET_OPTION = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bars and no per-fold lines, only the results (TQDM_DISABLE=1 drops the bars only).",
)


def cache_dir() -> Path:
    """Where default manifests and stores go: ``$SERMTL_CACHE`` or ``./cache``."""
    return Path(os.environ.get("SERMTL_CACHE", "cache"))


def corpus_root(corpus: str, root: str | None) -> str:
    """``--root``, else ``$SERMTL_<CORPUS>_ROOT``; a one-line error when neither is set."""
    variable = f"SERMTL_{corpus.upper()}_ROOT"
    value = root or os.environ.get(variable)
    if not value:
        raise ConfigError(f"no corpus root for {corpus!r}: pass --root DIR or set {variable}")
    return value


def parse_pairs(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    """``("key=value", …)`` from a repeated ``flag`` → a dict (one-line error naming the flag)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """Recipe options from repeated ``--option KEY=VALUE`` flags (``-`` in keys read as ``_``)."""
    return {key.replace("-", "_"): value for key, value in parse_pairs(pairs, "--option").items()}


def load_manifest(corpus: str | None, root: str | None, manifest: str | None, options: dict[str, str]):
    """The manifest named by ``--corpus/--root`` or ``--manifest``, and its corpus name."""
    from featurestore.corpora import prepare

    if manifest:
        if corpus and corpus != "csv":
            raise ConfigError("give either --corpus or --manifest, not both")
        return prepare("csv", manifest, **options), Path(manifest).stem
    if not corpus:
        raise ConfigError("give --corpus NAME (with --root DIR) or --manifest CSV")
    return prepare(corpus, corpus_root(corpus, root), **options), corpus


def _echo_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class SermtlGroup(click.Group):
    """Turns :class:`SermtlError` into one line on stderr and exit code 1, a flag that does
    not parse into one line and exit code 2, Ctrl-C into 130,
    and warnings (e.g. a corpus's unlabelled files) into ``warning: …`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _echo_warning
        try:
            return super().invoke(ctx)
        except SermtlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:  # a flag that does not parse: one line, not the usage block
            command = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {command}{exc.format_message()}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
            sys.exit(130)


@click.group(cls=SermtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sermtl", message="sermtl %(version)s")
def main() -> None:
    """sermtl: speech emotion recognition with data-expression-aware multi-task learning.

    Extract features once into a store (prepare, extract), check it (info, verify);
    `sermtl demo` runs it all on a generated corpus.
    """


@main.command()
@click.option(
    "--out",
    type=NonEmptyPath(file_okay=False),
    default="demo",
    show_default=True,
    help="Folder for the corpus, model, stores and summary.",
)
def demo(out: str) -> None:
    """Generate a corpus and run prepare → extract (MFCC, tiny wav2vec2) → cv with/without MTL → report."""
    from trainer.demo import run_demo

    summary = run_demo(out, echo=click.echo)
    if not all(store["verified"] for store in summary["stores"].values()):
        raise ConfigError(f"demo stores failed verification; see {out}/demo.json")
    click.echo(f"demo done: {summary['report']}")


@main.command()
@click.option("--corpus", required=True, type=click.Choice(available_corpora()), help="Corpus recipe (`sermtl list`).")
@click.option(
    "--root", type=NonEmptyPath(), help="Corpus folder (for csv: the CSV file). Default: $SERMTL_<CORPUS>_ROOT."
)
@click.option(
    "--out", type=NonEmptyPath(dir_okay=False), help="Manifest CSV to write. Default: cache/<corpus>_manifest.csv."
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Recipe option, e.g. on_duplicate=skip (repeatable).",
)
@click.option(
    "--relative",
    is_flag=True,
    help="Write audio paths relative to the manifest's folder, so the manifest and the corpus can move together.",
)
def prepare(corpus: str, root: str | None, out: str | None, options: tuple[str, ...], relative: bool) -> None:
    """Turn a corpus folder into a manifest CSV and print counts per label."""
    from featurestore.corpora import prepare as prepare_corpus
    from featurestore.manifest import summarise

    manifest = prepare_corpus(corpus, corpus_root(corpus, root), **parse_options(options))
    path = manifest.write_csv(out or cache_dir() / f"{corpus}_manifest.csv", relative=relative)
    click.echo(summarise(manifest))
    report = getattr(manifest, "report", None)
    if report is not None and report.summary():
        click.echo(report.summary())
    click.echo(f"manifest: {path}")


@main.command()
@click.option(
    "--corpus", type=click.Choice(available_corpora()), help="Corpus recipe (with --root or $SERMTL_<CORPUS>_ROOT)."
)
@click.option("--root", type=NonEmptyPath(), help="Corpus folder.")
@click.option(
    "--manifest",
    type=NonEmptyPath(dir_okay=False),
    help="A CSV manifest (utt_id,path,emotion,speaker,...) instead of a recipe.",
)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Recipe option (repeatable).")
@click.option("--feature", required=True, type=click.Choice(list(FEATURES)), help="Feature to extract.")
@click.option(
    "--model",
    default=DEFAULT_SSL_MODEL,
    show_default=True,
    help="w2v2: Hugging Face model name or local folder (wav2vec2, HuBERT, WavLM).",
)
@click.option(
    "--layers",
    default="last",
    show_default=True,
    help="w2v2: hidden states to keep: last, all, or a list like 0,12,24.",
)
@click.option(
    "--store", type=NonEmptyPath(), help="Store path. Default: cache/<corpus>_<feature>.zarr (.h5 with --format hdf5)."
)
@click.option(
    "--format",
    "store_format",
    type=click.Choice(available_backends()),
    help="Store format. Default: from the --store suffix, else zarr.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option(
    "--batch-seconds", type=float, help="Padded audio seconds per batch. Default: 200 for w2v2, 600 for the others."
)
@click.option("--max-batch", type=int, help="At most this many utterances per batch (1 = one by one).")
@click.option(
    "--dtype",
    type=click.Choice(STORE_DTYPES),
    help="Stored dtype. Default: float16 for w2v2, float32 for the others.",
)
@click.option(
    "--chunk-seconds",
    type=click.FloatRange(min=0),
    help="w2v2: utterances longer than this are processed in overlapping windows.",
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR_CHOICES),
    default="fail",
    show_default=True,
    help="Bad item: stop, or skip it and list it in the store's report.",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Audio decoding threads.")
@click.option("--repair", is_flag=True, help="First recompute the entries that `sermtl verify` finds wrong.")
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_DURATION,
    show_default=True,
    help="Longest audio (file or segment) to decode, in seconds; longer items fail or are skipped (--on-error).",
)
@QUIET_OPTION
def extract(
    corpus,
    root,
    manifest,
    options,
    feature,
    model,
    layers,
    store,
    store_format,
    device,
    batch_seconds,
    max_batch,
    dtype,
    chunk_seconds,
    on_error,
    workers,
    repair,
    max_duration,
    quiet,
) -> None:
    """Extract features for every utterance into a store (resumable: re-run to finish).

    Under `torchrun --nproc-per-node N --no-python sermtl extract …` the N processes share
    the work and rank 0 merges it into the one store (docs/scale-out.md)."""
    from featurestore.distributed import extract_sharded, process_group, shard_dir, take_in_shards
    from featurestore.features import accepted_options, build_extractor
    from featurestore.pipeline import extract_to_store
    from featurestore.store.base import check_store_path

    rows, name = load_manifest(corpus, root, manifest, parse_options(options))
    suffix = ".h5" if store_format == "hdf5" else ".zarr"
    store_path = check_store_path(store) if store else cache_dir() / f"{name}_{feature}{suffix}"
    group = click.get_current_context().with_resource(process_group(device))  # None outside torchrun
    extractor = build_extractor(
        feature,
        **accepted_options(
            feature, {"device": device, "model": model, "layers": layers, "chunk_seconds": chunk_seconds}
        ),
    )
    if group is None and shard_dir(store_path).is_dir():  # an interrupted torchrun run, resumed by one process
        taken = take_in_shards(rows, extractor, store_path, format=store_format, dtype=dtype or extractor.default_dtype)
        click.echo(f"{shard_dir(store_path)}: {taken} entries of an interrupted torchrun run taken in")
    report = (functools.partial(extract_sharded, group) if group else extract_to_store)(
        rows,
        extractor,
        store_path,
        format=store_format,
        dtype=dtype or extractor.default_dtype,
        batch_seconds=extractor.default_batch_seconds if batch_seconds is None else batch_seconds,
        max_batch=max_batch,
        on_error=on_error,
        workers=workers,
        on_item_error=lambda line: click.echo(line, err=True),
        repair=repair,
        max_duration=max_duration,
        progress=not quiet,
    )
    if report is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    speed = (
        f"{report.audio_seconds:.1f} audio s in {report.elapsed:.1f} s ({report.realtime_factor:.0f}x real time)"
        if report.stored
        else f"nothing to extract ({report.elapsed:.2f} s)"
    )
    click.echo(
        f"{report.store}: {report.stored} stored, {report.already_done} already there, "
        f"{len(report.skipped)} skipped{f', {len(report.repaired)} repaired' if repair else ''}; {speed}"
    )


def _apply(options: list, command):
    for option in reversed(options):
        command = option(command)
    return command


def declared_option(field, spec):
    """The click option of a declared field (:mod:`featurestore.options`): its flag, default,
    help and allowed values come from the declaration alone."""
    import dataclasses

    from featurestore.options import field_flag

    kind = {"int": click.INT, "float": click.FLOAT}.get(str(field.type), click.STRING)
    allowed = spec.describe()
    return click.option(
        field_flag(field),
        field.name,
        type=click.Choice(spec.choices) if spec.choices else kind,
        default=field.default if field.default is not dataclasses.MISSING else None,
        show_default=spec.show_default,
        help=spec.help + (f" Allowed: {allowed}." if allowed and not spec.choices else ""),
    )


def config_option(name: str):
    """The click option of :class:`trainer.config.TrainConfig` field ``name``."""
    from trainer.config import options

    return declared_option(*next((f, s) for f, s in options() if f.name == name))


TENSORBOARD_OPTION = click.option(
    "--tensorboard",
    is_flag=True,
    help="Also log every epoch as TensorBoard scalars under OUT/tensorboard/fold_<k> "
    "(pip install 'sermtl[tensorboard]').",
)
#: The protocol's fields that have a flag (``--protocol``, ``--by``, ``--folds``, …), by name.
PROTOCOL_FIELDS = {field.name: (field, spec) for field, spec in declared(Protocol) if spec.cli}
PROTOCOL_OPTIONS = [declared_option(field, spec) for field, spec in PROTOCOL_FIELDS.values()]


def _training_options() -> list:
    """The options of train, cv and sweep: the store, a config file, the protocol's, the run
    directory, and one per training option (generated from :mod:`trainer.config`)."""
    from trainer.config import options, preset_names

    return [
        click.option("--store", type=NonEmptyPath(), help="Feature store to train on (or the one --config names)."),
        click.option(
            "--config",
            "config_file",
            metavar="FILE|PRESET",
            help=f"Options from a YAML/JSON file (a run's config.json too) or a preset ({', '.join(preset_names())}); "
            "flags given on the command line override it.",
        ),
        *PROTOCOL_OPTIONS,
        click.option(
            "--out", type=NonEmptyPath(file_okay=False), help="Run directory. Default: runs/<store>-<aux>-<protocol>."
        ),
        QUIET_OPTION,
    ] + [config_option(field.name) for field, _ in options()]


def _given(name: str) -> bool:
    """Whether the current command's ``name`` option was set on the command line (or from the environment)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(name) in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )


def _run_setup(store: str | None, config_file: str | None, params: dict[str, Any]):
    """The store, the protocol (``None``: the store's default) and the training config that
    ``--config`` and the flags describe; flags given on the command line win."""
    from trainer.config import ConfigFile, TrainConfig, read_config_file

    file = read_config_file(config_file) if config_file else ConfigFile("")
    config = TrainConfig.from_dict(
        {**file.train, **{k: v for k, v in params.items() if k not in PROTOCOL_FIELDS and _given(k)}}
    )
    store = store or file.store
    if not store:
        raise ConfigError("--store is required (or a --config that names one)")
    protocol = dict(file.protocol or {})
    for key, (_, spec) in PROTOCOL_FIELDS.items():
        if _given(key):
            value = params[key]
            protocol[key] = spec.parse(value) if spec.parse and value is not None else value
    if protocol.get("path") is not None:
        protocol.setdefault("name", "file")
        protocol.setdefault("by", None)
    if protocol and "name" not in protocol:
        raise ConfigError(f"--by/--folds/--valid-fraction need --protocol ({', '.join(PROTOCOLS)})")
    return store, Protocol.from_dict(protocol, "the protocol flags") if protocol else None, config


def _run_training(
    only_folds: list[int] | None,
    store: str | None,
    config_file: str | None,
    out: str | None,
    quiet: bool,
    tensorboard: bool = False,
    repeats: int = 1,
    **params,
) -> None:
    from featurestore.distributed import process_group
    from featurestore.store.reader import stored_manifest
    from trainer.cv import run_cv, run_repeats
    from trainer.distributed import run_cv_distributed
    from trainer.loop import resolved_config
    from trainer.metrics import describe_repeats, describe_results

    store, protocol, config = _run_setup(store, config_file, params)
    config = resolved_config(config, stored_manifest(store))  # --aux auto made concrete, for the run's name too
    aux = "nomtl" if config.aux in ("none", "") else config.aux
    run_dir = (
        Path(out) if out else Path("runs") / f"{Path(store).stem}-{aux}-{protocol.name if protocol else 'default'}"
    )
    group = click.get_current_context().with_resource(process_group(config.device))  # None outside torchrun
    runner = functools.partial(run_cv_distributed, group) if group else run_cv
    runner = functools.partial(runner, progress=not quiet, tensorboard=tensorboard)
    if repeats > 1:
        outcome = run_repeats(runner, store, run_dir, config, protocol, repeats, only_folds=only_folds)
        if outcome is not None:
            for seed, results in outcome["per_seed"].items():
                click.echo(f"{run_dir / f'seed_{seed}'}: {describe_results(results)}")
            click.echo(f"{run_dir}: {describe_repeats(outcome['summary'])}")
        return
    results = runner(store, run_dir, config, protocol, only_folds=only_folds)
    if results is not None:  # None on torchrun ranks other than 0: rank 0 reports for all
        click.echo(f"{run_dir}: {describe_results(results)}")


@main.command()
@click.option("--fold", type=int, default=1, show_default=True, help="Which fold of the protocol to train.")
@click.option(
    "--all-data",
    is_flag=True,
    help="Train the deployable model on every row instead (no test): with --config RUN/config.json, the "
    "run's settings and the median of the epochs its folds kept; writes checkpoint.pt and MODEL_CARD.md.",
)
@functools.partial(_apply, _training_options())
@TENSORBOARD_OPTION
def train(fold: int, all_data: bool, tensorboard: bool, **options) -> None:
    """Train and test one fold of a protocol from a feature store (or, with --all-data, the
    deployable model on all of it)."""
    if all_data:
        _train_all_data(**options)
        return
    _run_training([fold], tensorboard=tensorboard, **options)


def _train_all_data(store: str | None, config_file: str | None, out: str | None, quiet: bool, **params) -> None:
    import dataclasses

    from trainer.deploy import epochs_from_run, train_all_data

    store, _, config = _run_setup(store, config_file, params)
    run = Path(config_file).parent if config_file and Path(config_file).name == "config.json" else None
    if run is not None and not _given("epochs"):
        epochs = epochs_from_run(run)
        if epochs is None:
            raise ConfigError(f"--all-data: {run} has no finished folds to take the epoch count from; give --epochs")
        config = dataclasses.replace(config, epochs=epochs)
    model_dir = Path(out) if out else Path("models") / Path(store).stem
    train_all_data(store, model_dir, config, cv_run=run, progress=not quiet)
    click.echo(
        f"{model_dir}: trained on every row for {config.epochs} epochs; "
        f"{model_dir / 'checkpoint.pt'}, {model_dir / 'MODEL_CARD.md'}"
    )


@main.command()
@functools.partial(_apply, _training_options())
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run the whole CV once per seed --seed … --seed+N−1 (folds drawn anew each), into OUT/seed_<s>, "
    "and write OUT/repeats.json with the mean ± std over seeds.",
)
@TENSORBOARD_OPTION
def cv(repeats: int, tensorboard: bool, **options) -> None:
    """Run every fold of a protocol; write results.json, predictions and checkpoints (resumable)."""
    _run_training(None, repeats=repeats, tensorboard=tensorboard, **options)


@main.command()
@functools.partial(_apply, _training_options())
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="KEY=V1,V2,…",
    help="Values of one option to sweep (repeatable): the sweep runs the Cartesian product, e.g. "
    "--grid alpha0=0.05,0.1 --grid aux=none,expression.",
)
@click.option(
    "--grid-file",
    type=NonEmptyPath(dir_okay=False),
    help="YAML/JSON list of settings (mappings of options), for a grid that is not a product.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Seeds --seed … --seed+N−1; every setting runs on the same folds of each seed.",
)
@click.option(
    "--baseline",
    "baseline_spec",
    metavar="KEY=VALUE,…",
    help="The setting the others are compared with (default: the first).",
)
def sweep(
    store: str | None,
    config_file: str | None,
    out: str | None,
    quiet: bool,
    grids: tuple[str, ...],
    grid_file: str | None,
    repeats: int,
    baseline_spec: str | None,
    **params,
) -> None:
    """Run cv for every setting of an option grid and seed, and compare the settings with
    paired statistics (DIR/sweep.json, sweep.md, sweep.png; resumable, torchrun too)."""
    from featurestore.distributed import process_group
    from trainer.distributed import run_sweep_distributed
    from trainer.sweep import Sweep, find_baseline, parse_grid, read_grid_file, run_sweep, sweep_table

    store, protocol, config = _run_setup(store, config_file, params)
    if grids and grid_file:
        raise ConfigError("give --grid or --grid-file, not both")
    settings = read_grid_file(grid_file) if grid_file else parse_grid(grids)
    plan = Sweep(
        Path(store),
        Path(out) if out else Path("sweeps") / Path(store).stem,
        config,
        protocol,
        settings,
        list(range(config.seed, config.seed + repeats)),
        find_baseline(settings, baseline_spec),
    )
    group = click.get_current_context().with_resource(process_group(config.device))  # None outside torchrun
    summary = run_sweep_distributed(group, plan, progress=not quiet) if group else run_sweep(plan, progress=not quiet)
    if summary is not None:  # None on torchrun ranks other than 0
        click.echo(sweep_table(summary))
        click.echo(f"sweep: {plan.out / 'sweep.md'}")


@main.command()
@functools.partial(
    _apply,
    [
        click.option("--store", required=True, type=NonEmptyPath(), help="Feature store."),
        *PROTOCOL_OPTIONS,
        config_option("label"),
        config_option("seed"),
    ],
)
@click.option("--c", "c", type=float, default=1.0, show_default=True, help="SVM regularisation C.")
@click.option("--out", type=NonEmptyPath(dir_okay=False), help="Write the results as JSON here.")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Fit on the folds of seeds --seed … --seed+N−1 (as cv --repeats) and give the mean ± std over seeds.",
)
@click.option(
    "--functionals",
    type=click.Choice(list(FUNCTIONALS)),
    help="Utterance vectors: mean/std of the stored frames (mfcc-stats, the default for frame stores), or "
    "openSMILE's eGeMAPS/ComParE functionals (from a store of --feature egemaps-functionals or "
    "compare-functionals, their default).",
)
@click.option(
    "--input-norm",
    type=click.Choice(SVM_INPUT_NORMS),
    default="global",
    show_default=True,
    help="Standardise the vectors on the training rows (global), or first per speaker over each "
    "speaker's utterances, test speakers' unlabelled ones included (speaker).",
)
def baseline(
    store: str,
    c: float,
    out: str | None,
    repeats: int,
    label: str,
    seed: int,
    functionals: str | None,
    input_norm: str,
    **params,
) -> None:
    """RBF-SVM on one vector per utterance (functionals), on the same folds as train/cv."""
    from featurestore.atomic import write_json
    from trainer.baseline import svm_repeats
    from trainer.metrics import describe_repeats, describe_results

    _, protocol, config = _run_setup(store, None, {**params, "label": label, "seed": seed})  # checks --label, --seed
    outcome = svm_repeats(
        store,
        protocol,
        label=config.label,
        c=c,
        seed=config.seed,
        repeats=repeats,
        functionals=functionals,
        input_norm=input_norm,
    )
    if out:
        write_json(out, outcome["results"])
    text = describe_results(outcome["results"]) if repeats == 1 else describe_repeats(outcome["results"])
    click.echo(f"{outcome['name']}: {text}")


@main.command()
@click.argument("name", type=click.Choice(EXPERIMENTS.names()))
@click.option(
    "--out",
    type=NonEmptyPath(file_okay=False),
    default="experiments",
    show_default=True,
    help="Experiment folder (runs are shared inside it).",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="CORPUS=DIR",
    help="Corpus folder (or CSV manifest), e.g. iemocap=/data/IEMOCAP_full_release.",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="CORPUS:FEATURE=PATH",
    help="Use an existing store, e.g. iemocap:w2v2=cache/iemocap_w2v2.zarr.",
)
@click.option(
    "--corpus",
    "corpora",
    multiple=True,
    help="Corpora to run (default: iemocap and baum1, those available; table5: exactly two).",
)
@click.option(
    "--feature",
    type=click.Choice(list(FEATURES)),
    help="Restrict to one feature (default: the paper's for the experiment).",
)
@click.option(
    "--model", default=DEFAULT_SSL_MODEL, show_default=True, help="w2v2 model for stores that must be extracted."
)
@click.option("--layers", default="last", show_default=True, help="w2v2 layers to extract.")
@functools.partial(
    _apply, [config_option(name) for name in ("epochs", "channels", "batch_size", "alpha_max", "seed", "device")]
)
def experiment(
    name, out, roots, stores, corpora, feature, model, layers, epochs, channels, batch_size, alpha_max, seed, device
) -> None:
    """Reproduce a table or figure of the paper: runs, results.json, table.md and plots."""
    from featurestore.corpora import CORPORA
    from trainer.config import TrainConfig
    from trainer.experiments import Workspace, run_experiment

    root_map = parse_pairs(roots, "--root")
    store_map = {}
    for key, path in parse_pairs(stores, "--store").items():
        corpus, sep, feat = key.partition(":")
        if not sep or feat not in FEATURES:
            raise ConfigError(
                f"--store expects CORPUS:FEATURE=PATH with FEATURE one of {', '.join(FEATURES)}, got {key!r}"
            )
        store_map[(corpus, feat)] = Path(path)
    train = {"epochs": epochs, "channels": channels, "batch_size": batch_size, "alpha_max": alpha_max, "seed": seed}
    TrainConfig.from_dict({**train, "device": device})  # checked before any store is extracted
    recipes = {c: "csv" for c, r in root_map.items() if str(r).lower().endswith(".csv")}
    unknown = [c for c in root_map if c not in CORPORA and c not in recipes]
    if unknown:
        raise ConfigError(
            f"--root {unknown[0]}=…: not a corpus recipe ({', '.join(sorted(CORPORA))}) nor a .csv manifest"
        )
    workspace = Workspace(
        out=Path(out),
        cache=cache_dir(),
        roots=root_map,
        recipes=recipes,
        stores=store_map,
        model=model,
        layers=layers,
        device=device,
        echo=click.echo,
        train=train,
    )
    options: dict[str, Any] = {"corpora": list(corpora) or None}
    if feature:
        options["feature"] = feature
    folder = run_experiment(name, workspace, **options)
    click.echo(f"{name} done: {folder / 'table.md'}")


@main.command()
@click.argument("baseline_run", type=NonEmptyPath(exists=True))
@click.argument("runs", nargs=-1, required=True, type=NonEmptyPath(exists=True))
@click.option(
    "--metric", default="uwa", show_default=True, help="A number of each fold's metrics.json: wa, uwa, aux_accuracy, …"
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare(baseline_run: str, runs: tuple[str, ...], metric: str, as_json: bool) -> None:
    """Finished runs (cv runs, --repeats or sweep setting folders, baseline --out JSON) against
    BASELINE_RUN, paired by (seed, fold) on the same test folds: mean difference, 95 % interval, Wilcoxon p."""
    from trainer.compare import compare_runs, comparison_table

    summary = compare_runs(Path(baseline_run), [Path(r) for r in runs], metric)
    click.echo(json.dumps(summary, indent=2) if as_json else comparison_table(summary))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=NonEmptyPath())
@click.option(
    "--out",
    type=NonEmptyPath(file_okay=False),
    help="Report folder (needed for several runs; default: the run's own folder).",
)
@click.option(
    "--paper",
    "paper_json",
    type=NonEmptyPath(dir_okay=False),
    help='JSON {"title": …, "rows": {run: {"wa": …, "uwa": …}}} shown beside ours.',
)
def report(run_dirs: tuple[str, ...], out: str | None, paper_json: str | None) -> None:
    """Write report.md for cv run directories: tables, confusion matrices, curves, α schedule."""
    from trainer.reports import write_report
    from trainer.runfiles import read_paper

    click.echo(write_report(run_dirs, out, read_paper(paper_json) if paper_json else None))


@main.command()
@click.option(
    "--checkpoint",
    required=True,
    type=NonEmptyPath(),
    help="checkpoint.pt of a trained fold, or a run directory (its folds as an ensemble: mean probabilities).",
)
@click.argument("inputs", nargs=-1, required=True, type=NonEmptyPath())
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_DURATION,
    show_default=True,
    help="Longest audio file to decode, in seconds.",
)
def predict(checkpoint: str, inputs: tuple[str, ...], device: str, as_json: bool, max_duration: float) -> None:
    """Emotion (and auxiliary) probabilities for audio files or folders."""
    from trainer.predict import predict_files

    rows = predict_files(checkpoint, inputs, device=device, max_duration=max_duration)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        probs = " ".join(f"{k}={v:.2f}" for k, v in row["emotion_probs"].items())
        extra = "".join(
            f"  {k}={v}"
            for k, v in row.items()
            if k not in ("file", "emotion", "emotion_probs") and not k.endswith("_probs")
        )
        click.echo(f"{row['file']}\t{row['emotion']}\t{probs}{extra}")


@main.command()
@click.option(
    "--checkpoint",
    required=True,
    type=NonEmptyPath(),
    help="checkpoint.pt of a trained fold, or a model folder of train --all-data.",
)
@click.option(
    "--format", "export_format", type=click.Choice(["torchscript", "onnx"]), default="onnx", show_default=True
)
@click.option(
    "--out",
    required=True,
    type=NonEmptyPath(dir_okay=False),
    help="The exported model (FILE.json and FILE.md beside it).",
)
def export(checkpoint: str, export_format: str, out: str) -> None:
    """Export a trained model (features → emotion probabilities, embedding) for serving."""
    from trainer.export import export_model
    from trainer.predict import checkpoint_paths

    paths = checkpoint_paths(checkpoint)
    if len(paths) > 1:
        raise ConfigError(
            f"--checkpoint {checkpoint}: a run directory holds {len(paths)} folds; export one fold's "
            "checkpoint.pt, or a model of train --all-data"
        )
    path = export_model(paths[0], out, export_format)
    click.echo(f"{path} ({export_format}, {path.stat().st_size / 2**20:.1f} MiB); {path.name}.json, {path.name}.md")


def _format_summary(summary: dict[str, Any]) -> str:
    frames = summary["frames"]
    feature = summary["config"].get("feature", {})
    lines = [
        f"store     {summary['path']} ({summary['format']}, {summary['size_bytes'] / 2**20:.1f} MiB)",
        f"feature   {feature.get('feature')} {feature.get('model', '')}".rstrip(),
        f"shape     {summary['layers']} layer(s) x {summary['dim']} dims, {summary['dtype']}",
        f"entries   {summary['utterances']} of {summary['manifest_rows']} manifest rows "
        f"({summary['missing']} missing, {len(summary['skipped'])} skipped), {summary['audio_hours']:.2f} h",
        f"frames    total {frames['total']}, min {frames['min']}, mean {frames['mean']:.1f}, max {frames['max']}",
    ]
    for column, counts in summary["counts"].items():
        lines.append(f"{column:<9} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for item in summary["skipped"]:
        lines.append(f"skipped   {item['utt_id']}: {item['error']}")
    lines.append(
        f"fingerprint {summary['config'].get('fingerprint')}, sermtl {summary['config'].get('sermtl_version')}"
    )
    return "\n".join(lines)


@main.command(name="list")
def list_registries() -> None:
    """What sermtl knows by name: corpus recipes, features, store formats, fold protocols,
    config presets and training options (with defaults and allowed values)."""
    from trainer.config import flag, options, preset_names

    for title, names in (
        ("corpora", available_corpora()),
        ("features", list(FEATURES)),
        ("store formats", available_backends()),
        ("protocols", list(PROTOCOLS)),
        ("presets", preset_names()),
    ):
        click.echo(f"{title + ':':<15}{', '.join(names)}")
    click.echo("training options:")
    for field, spec in options():
        click.echo(f"  {flag(field.name):<18}{field.default!s:<12}{spec.describe()}")


@main.command()
@click.argument("store", type=NonEmptyPath())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(store: str, as_json: bool) -> None:
    """Describe a store: counts per label, dims, frames, size on disk, config."""
    from featurestore.verify import store_summary

    summary = store_summary(store)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else _format_summary(summary))


@main.command()
@click.argument("store", type=NonEmptyPath())
def verify(store: str) -> None:
    """Check every entry of a store; exit 1 on any problem or missing utterance."""
    from featurestore.verify import verify_store

    result = verify_store(store)
    for problem in result.problems:
        click.echo(f"problem: {problem}")
    for utt_id in result.missing:
        click.echo(f"missing: {utt_id}")
    for item in result.skipped:
        click.echo(f"skipped: {item['utt_id']}: {item['error']}")
    click.echo(
        f"{result.path}: {result.checked} entries checked, {len(result.problems)} problem(s), {len(result.missing)} missing"
    )
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
