"""The ``sermtl`` command line (also ``python cli.py …``).

Each command parses its flags and calls one library function; torch and transformers are
imported only by the commands that need them, so ``sermtl --help`` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from featurestore.errors import SermtlError

DEFAULT_MODEL = "facebook/wav2vec2-large-960h"
#: Per-feature defaults for flags whose best value depends on the feature.
FEATURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mfcc": {"dtype": "float32", "batch_seconds": 600.0},
    "w2v2": {"dtype": "float16", "batch_seconds": 200.0},
}


def cache_dir() -> Path:
    """Where default manifests and stores go: ``$SERMTL_CACHE`` or ``./cache``."""
    return Path(os.environ.get("SERMTL_CACHE", "cache"))


def corpus_root(corpus: str, root: str | None) -> str:
    """``--root``, else ``$SERMTL_<CORPUS>_ROOT``; a one-line error when neither is set."""
    variable = f"SERMTL_{corpus.upper()}_ROOT"
    value = root or os.environ.get(variable)
    if not value:
        raise SermtlError(f"no corpus root for {corpus!r}: pass --root DIR or set {variable}")
    return value


def parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("key=value", …)`` from repeated ``--option`` flags → a dict."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SermtlError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def load_manifest(corpus: str | None, root: str | None, manifest: str | None, options: dict[str, str]):
    """The manifest named by ``--corpus/--root`` or ``--manifest``, and its corpus name."""
    from featurestore.corpora import prepare

    if manifest:
        if corpus and corpus != "csv":
            raise SermtlError("give either --corpus or --manifest, not both")
        return prepare("csv", manifest, **options), Path(manifest).stem
    if not corpus:
        raise SermtlError("give --corpus NAME (with --root DIR) or --manifest CSV")
    return prepare(corpus, corpus_root(corpus, root), **options), corpus


def _echo_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class SermtlGroup(click.Group):
    """Turns :class:`SermtlError` into one line on stderr and exit code 1, Ctrl-C into 130,
    and warnings (e.g. a corpus's unlabelled files) into ``warning: …`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _echo_warning
        try:
            return super().invoke(ctx)
        except SermtlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
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
@click.option("--out", type=click.Path(file_okay=False), default="demo", show_default=True, help="Folder for the corpus, model, stores and summary.")
def demo(out: str) -> None:
    """Generate a small corpus and run prepare → extract (MFCC, tiny wav2vec2) → verify."""
    from featurestore.demo import run_demo

    summary = run_demo(out, echo=click.echo)
    if not all(store["verified"] for store in summary["stores"].values()):
        raise SermtlError(f"demo stores failed verification; see {out}/demo.json")
    click.echo(f"demo done: {Path(out) / 'demo.json'}")


@main.command()
@click.option("--corpus", required=True, help="Corpus recipe: iemocap, baum1, emodb, ravdess, urdu, csv.")
@click.option("--root", help="Corpus folder (for csv: the CSV file). Default: $SERMTL_<CORPUS>_ROOT.")
@click.option("--out", type=click.Path(dir_okay=False), help="Manifest CSV to write. Default: cache/<corpus>_manifest.csv.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Recipe option, e.g. on_duplicate=skip (repeatable).")
def prepare(corpus: str, root: str | None, out: str | None, options: tuple[str, ...]) -> None:
    """Turn a corpus folder into a manifest CSV and print counts per label."""
    from featurestore.corpora import prepare as prepare_corpus
    from featurestore.manifest import summarise

    manifest = prepare_corpus(corpus, corpus_root(corpus, root), **parse_options(options))
    path = manifest.write_csv(out or cache_dir() / f"{corpus}_manifest.csv")
    click.echo(summarise(manifest))
    report = getattr(manifest, "report", None)
    if report is not None and report.summary():
        click.echo(report.summary())
    click.echo(f"manifest: {path}")


@main.command()
@click.option("--corpus", help="Corpus recipe name (with --root or $SERMTL_<CORPUS>_ROOT).")
@click.option("--root", help="Corpus folder.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="A CSV manifest (utt_id,path,emotion,speaker,...) instead of a recipe.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Recipe option (repeatable).")
@click.option("--feature", required=True, type=click.Choice(["mfcc", "w2v2"]), help="Feature to extract.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="w2v2: Hugging Face model name or local folder (wav2vec2, HuBERT, WavLM).")
@click.option("--layers", default="last", show_default=True, help="w2v2: hidden states to keep: last, all, or a list like 0,12,24.")
@click.option("--store", type=click.Path(), help="Store path. Default: cache/<corpus>_<feature>.zarr (.h5 with --format hdf5).")
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), help="Store format. Default: from the --store suffix, else zarr.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option("--batch-seconds", type=float, help="Padded audio seconds per batch. Default: 600 (mfcc), 200 (w2v2).")
@click.option("--max-batch", type=int, help="At most this many utterances per batch (1 = one by one).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), help="Stored dtype. Default: float32 (mfcc), float16 (w2v2).")
@click.option("--chunk-seconds", type=float, help="w2v2: utterances longer than this are processed in overlapping windows.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True, help="Bad item: stop, or skip it and list it in the store's report.")
@click.option("--workers", type=int, default=2, show_default=True, help="Audio decoding threads.")
def extract(corpus, root, manifest, options, feature, model, layers, store, store_format, device,
            batch_seconds, max_batch, dtype, chunk_seconds, on_error, workers) -> None:
    """Extract features for every utterance into a store (resumable: re-run to finish)."""
    from featurestore.features import build_extractor
    from featurestore.pipeline import extract_to_store

    rows, name = load_manifest(corpus, root, manifest, parse_options(options))
    suffix = ".h5" if store_format == "hdf5" else ".zarr"
    store_path = Path(store) if store else cache_dir() / f"{name}_{feature}{suffix}"
    extractor_options: dict[str, Any] = {"device": device}
    if feature == "w2v2":
        extractor_options.update(model=model, layers=layers)
        if chunk_seconds is not None:
            extractor_options["chunk_seconds"] = chunk_seconds
    extractor = build_extractor(feature, **extractor_options)
    defaults = FEATURE_DEFAULTS[feature]
    report = extract_to_store(
        rows, extractor, store_path, format=store_format, dtype=dtype or defaults["dtype"],
        batch_seconds=batch_seconds or defaults["batch_seconds"], max_batch=max_batch,
        on_error=on_error, workers=workers, on_item_error=lambda line: click.echo(line, err=True),
    )
    speed = (f"{report.audio_seconds:.1f} audio s in {report.elapsed:.1f} s ({report.realtime_factor:.0f}x real time)"
             if report.stored else f"nothing to extract ({report.elapsed:.2f} s)")
    click.echo(f"{report.store}: {report.stored} stored, {report.already_done} already there, "
               f"{len(report.skipped)} skipped; {speed}")


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
    lines.append(f"fingerprint {summary['config'].get('fingerprint')}, sermtl {summary['config'].get('sermtl_version')}")
    return "\n".join(lines)


@main.command()
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(store: str, as_json: bool) -> None:
    """Describe a store: counts per label, dims, frames, size on disk, config."""
    from featurestore.verify import store_summary

    summary = store_summary(store)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else _format_summary(summary))


@main.command()
@click.argument("store", type=click.Path())
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
    click.echo(f"{result.path}: {result.checked} entries checked, {len(result.problems)} problem(s), {len(result.missing)} missing")
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
