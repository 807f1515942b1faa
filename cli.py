"""The ``sermtl`` command line (also ``python cli.py …``).

Glue only: each command's options are generated from declarations
(:mod:`featurestore.commandline`), and its body builds them, calls one library function and
prints. torch and transformers are imported only by the commands that need them, so
``sermtl --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from featurestore.commandline import NonEmptyPath, Output, SermtlGroup, click_option, click_options, given, with_options
from featurestore.corpora.source import CorpusSource, ManifestOutput, describe_prepared, prepare_manifest
from featurestore.extract_options import ExtractOptions
from featurestore.options import flag
from trainer.baseline import SvmOptions
from trainer.compare import CompareOptions
from trainer.config import options as training_options
from trainer.model_options import ExportOptions, ModelSource
from trainer.paper import EXPERIMENTS
from trainer.protocols import Protocol
from trainer.reports import ReportOptions
from trainer.run_options import (
    DemoOptions,
    ExperimentOptions,
    RunOptions,
    SweepOptions,
    cv_run_of,
    resolve_run,
)


def config_options(*names: str) -> list:
    """The options of :class:`trainer.config.TrainConfig`'s fields ``names`` (all when none)."""
    return [click_option(field, spec) for field, spec in training_options() if not names or field.name in names]


#: The options of train, cv and sweep: the store, a config file, the protocol's, the run
#: directory, and one per training option.
TRAINING = [
    *click_options(RunOptions, "stores", "fuse", "config_file"),
    *click_options(Protocol),
    *click_options(RunOptions, "out"),
    *click_options(Output, "quiet"),
    *config_options(),
]


def _echo_lines(outcome: Any) -> None:
    """Print a training outcome (``None`` on torchrun ranks other than 0: rank 0 reports for all)."""
    if outcome is not None:
        click.echo("\n".join(outcome.lines()))


@click.group(cls=SermtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sermtl", message="sermtl %(version)s")
def main() -> None:
    """sermtl: speech emotion recognition with data-expression-aware multi-task learning.

    Extract features once into a store (prepare, extract), check it (info, verify);
    `sermtl demo` runs it all on a generated corpus.
    """


@main.command()
@with_options(click_options(DemoOptions))
def demo(out: str) -> None:
    """Generate a corpus and run prepare → extract (MFCC, tiny wav2vec2) → cv with/without MTL → report."""
    from trainer.demo import run_demo

    click.echo(f"demo done: {run_demo(out, echo=click.echo)['report']}")


@main.command()
@with_options(click_options(CorpusSource, "corpus", "root", "options"), click_options(ManifestOutput))
def prepare(corpus: str | None, root: str | None, options: tuple[str, ...], out: str | None, relative: bool) -> None:
    """Turn a corpus folder into a manifest CSV and print counts per label."""
    manifest, path = prepare_manifest(CorpusSource(corpus, root, options=options), ManifestOutput(out, relative))
    click.echo(describe_prepared(manifest, path))


@main.command()
@with_options(click_options(CorpusSource), click_options(ExtractOptions), click_options(Output, "quiet"))
def extract(corpus, root, manifest, options, quiet, **extraction) -> None:
    """Extract features for every utterance into a store (resumable: re-run to finish).

    Under `torchrun --nproc-per-node N --no-python sermtl extract …` the N processes share
    the work and rank 0 merges it into the one store (docs/scale-out.md)."""
    from featurestore.extraction import describe_extraction, extract_corpus

    wanted = ExtractOptions(**extraction)
    report = extract_corpus(CorpusSource(corpus, root, manifest, options), wanted, progress=not quiet, echo=_echo_err)
    if report is not None:  # a torchrun rank other than 0: rank 0 reports for all
        click.echo(describe_extraction(report, wanted.repair))


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@main.command()
@with_options(
    click_options(RunOptions, "fold", "all_data"), TRAINING, click_options(RunOptions, "repeats", "tensorboard")
)
def train(fold, all_data, repeats, tensorboard, stores, fuse, config_file, out, quiet, **flags) -> None:
    """Train and test one fold of a protocol from a feature store (or, with --all-data, the
    deployable model on all of it; with --repeats N, an ensemble of N seeds)."""
    run = resolve_run(stores, config_file, given(flags), fuse)
    if not all_data:
        from trainer.runner import run_training

        outcome = run_training(
            run, out, only_folds=[fold], repeats=repeats, progress=not quiet, tensorboard=tensorboard
        )
        _echo_lines(outcome)
        return
    from trainer.deploy import deploy_model, describe_model

    model_dir, config = deploy_model(
        run, out, cv_run_of(config_file), "epochs" in given(flags), not quiet, repeats=repeats
    )
    click.echo(describe_model(model_dir, config, repeats))


@main.command()
@with_options(TRAINING, click_options(RunOptions, "repeats", "tensorboard"))
def cv(repeats, tensorboard, stores, fuse, config_file, out, quiet, **flags) -> None:
    """Run every fold of a protocol; write results.json, predictions and checkpoints (resumable)."""
    from trainer.runner import run_training

    run = resolve_run(stores, config_file, given(flags), fuse)
    _echo_lines(run_training(run, out, repeats=repeats, progress=not quiet, tensorboard=tensorboard))


@main.command()
@with_options(TRAINING, click_options(SweepOptions), click_options(RunOptions, "repeats"))
def sweep(stores, fuse, config_file, out, quiet, grids, grid_file, baseline, repeats, **flags) -> None:
    """Run cv for every setting of an option grid and seed, and compare the settings with
    paired statistics (DIR/sweep.json, sweep.md, sweep.png; resumable, torchrun too)."""
    from trainer.runner import run_sweep_command
    from trainer.sweep import Sweep, sweep_table

    run = resolve_run(stores, config_file, given(flags), fuse)
    plan = Sweep.from_options(run, SweepOptions(grids, grid_file, baseline), out, repeats)
    summary = run_sweep_command(plan, progress=not quiet)
    if summary is not None:  # None on torchrun ranks other than 0
        click.echo(f"{sweep_table(summary)}\nsweep: {plan.out / 'sweep.md'}")


@main.command()
@with_options(
    click_options(RunOptions, "stores"),
    click_options(Protocol),
    config_options("label", "seed"),
    click_options(SvmOptions),
    click_options(RunOptions, "repeats"),
)
def baseline(stores, c, functionals, input_norm, out, repeats, **flags) -> None:
    """RBF-SVM on one vector per utterance (functionals), on the same folds as train/cv."""
    from trainer.baseline import describe_baseline, run_baseline

    run = resolve_run(stores, None, given(flags))
    click.echo(describe_baseline(run_baseline(run, SvmOptions(c, functionals, input_norm, out), repeats)))


@main.command()
@click.argument("name", type=click.Choice(EXPERIMENTS.names()))
@with_options(
    click_options(ExperimentOptions),
    click_options(ExtractOptions, "model", "layers"),
    config_options("epochs", "channels", "batch_size", "alpha_max", "seed", "device"),
)
def experiment(name, out, roots, stores, corpora, feature, model, layers, **train) -> None:
    """Reproduce a table or figure of the paper: runs, results.json, table.md and plots."""
    from trainer.experiments import Workspace, run_experiment

    options = ExperimentOptions(out, roots, stores, corpora, feature)
    workspace = Workspace.from_options(options, train, model=model, layers=layers, echo=click.echo)
    folder = run_experiment(name, workspace, options.corpora, options.feature)
    click.echo(f"{name} done: {folder / 'table.md'}")


@main.command()
@click.argument("baseline_run", type=NonEmptyPath(exists=True))
@click.argument("runs", nargs=-1, required=True, type=NonEmptyPath(exists=True))
@with_options(click_options(CompareOptions), click_options(Output, "as_json"))
def compare(baseline_run: str, runs: tuple[str, ...], metric: str, as_json: bool) -> None:
    """Finished runs (cv runs, --repeats or sweep setting folders, a --repeats run's ensemble.json,
    baseline --out JSON) against
    BASELINE_RUN, paired by (seed, fold) on the same test folds: mean difference, 95 % interval, Wilcoxon p."""
    from pathlib import Path

    from trainer.compare import compare_runs, comparison_table

    summary = compare_runs(Path(baseline_run), [Path(r) for r in runs], metric)
    click.echo(json.dumps(summary, indent=2) if as_json else comparison_table(summary))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=NonEmptyPath())
@with_options(click_options(ReportOptions))
def report(run_dirs: tuple[str, ...], out: str | None, paper: str | None) -> None:
    """Write report.md for cv run directories: tables, confusion matrices, curves, α schedule."""
    from trainer.reports import report_runs

    click.echo(report_runs(run_dirs, ReportOptions(out, paper)))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=NonEmptyPath())
@with_options(
    click_options(ModelSource), click_options(Output, "as_json"), click_options(ExtractOptions, "max_duration")
)
def predict(inputs: tuple[str, ...], checkpoint: str, device: str, as_json: bool, max_duration: float) -> None:
    """Emotion (and auxiliary) probabilities for audio files or folders."""
    from trainer.predict import format_predictions, predict_files

    rows = predict_files(checkpoint, inputs, device=device, max_duration=max_duration)
    click.echo(json.dumps(rows, indent=2) if as_json else format_predictions(rows))


@main.command()
@with_options(click_options(ModelSource, "checkpoint"), click_options(ExportOptions))
def export(checkpoint: str, format: str, out: str) -> None:
    """Export a trained model (features → emotion probabilities, embedding) for serving."""
    from trainer.export import describe_export, export_checkpoint

    click.echo(describe_export(export_checkpoint(ModelSource(checkpoint), ExportOptions(format, out)), format))


@main.command(name="list")
def list_registries() -> None:
    """What sermtl knows by name: corpus recipes, features, store formats, fold protocols,
    config presets, experiments, SVM functionals and training options (with defaults and
    allowed values)."""
    from trainer.registries import REGISTRIES

    for title, registry in REGISTRIES.items():
        click.echo(f"{title + ':':<15}{', '.join(registry.names())}")
    click.echo("training options:")
    for field, spec in training_options():
        click.echo(f"  {flag(field.name):<18}{field.default!s:<12}{spec.describe()}")


@main.command()
@click.argument("store", type=NonEmptyPath())
@with_options(click_options(Output, "as_json"))
def info(store: str, as_json: bool) -> None:
    """Describe a store: counts per label, dims, frames, size on disk, config."""
    from featurestore.verify import format_summary, store_summary

    summary = store_summary(store)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary))


@main.command()
@click.argument("store", type=NonEmptyPath())
def verify(store: str) -> None:
    """Check every entry of a store; exit 1 on any problem or missing utterance."""
    from featurestore.verify import describe_verification, verify_store

    result = verify_store(store)
    click.echo(describe_verification(result))
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
