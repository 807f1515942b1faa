"""Where a command's utterances come from: a corpus recipe and its folder, or a CSV manifest
(:class:`CorpusSource`, declared options of ``prepare`` and ``extract``), and where default
manifests and stores go (:func:`cache_dir`).

>>> CorpusSource(corpus="iemocap", root="/data/IEMOCAP", options=("on-duplicate=skip",)).recipe_options()
{'on_duplicate': 'skip'}
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from featurestore.corpora import CORPORA, available_corpora, prepare
from featurestore.errors import ConfigError
from featurestore.manifest import Manifest, summarise
from featurestore.options import check_fields, key_values, option


def cache_dir() -> Path:
    """Where default manifests and stores go: ``$SERMTL_CACHE`` or ``./cache``."""
    return Path(os.environ.get("SERMTL_CACHE", "cache"))


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """A corpus recipe with its folder, or a CSV manifest (declared options)."""

    corpus: str | None = option(
        None, "Corpus recipe (`sermtl list`), with --root or $SERMTL_<CORPUS>_ROOT.", choices=tuple(available_corpora())
    )
    root: str | None = option(
        None, "Corpus folder (for csv: the CSV file). Default: $SERMTL_<CORPUS>_ROOT.", path="any"
    )
    manifest: str | None = option(
        None, "A CSV manifest (utt_id,path,emotion,speaker,...) instead of a recipe.", path="file"
    )
    options: tuple[str, ...] = option(
        (), "Recipe option, e.g. on_duplicate=skip (repeatable).", flag="--option", metavar="KEY=VALUE"
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def recipe_options(self) -> dict[str, str]:
        """The ``--option KEY=VALUE`` pairs as a dict (``-`` in keys read as ``_``)."""
        return {key.replace("-", "_"): value for key, value in key_values(self.options, "--option").items()}

    def root_folder(self) -> str:
        """``--root``, else ``$SERMTL_<CORPUS>_ROOT``; a one-line error when neither is set."""
        variable = f"SERMTL_{str(self.corpus).upper()}_ROOT"
        value = self.root or os.environ.get(variable)
        if not value:
            raise ConfigError(f"no corpus root for {self.corpus!r}: pass --root DIR or set {variable}")
        return value

    def load(self) -> tuple[Manifest, str]:
        """The manifest this source names, and a name for what is made of it (the corpus, or
        the manifest file's stem)."""
        if self.manifest:
            if self.corpus and self.corpus != "csv":
                raise ConfigError("give either --corpus or --manifest, not both")
            return prepare("csv", self.manifest, **self.recipe_options()), Path(self.manifest).stem
        if not self.corpus:
            raise ConfigError("give --corpus NAME (with --root DIR) or --manifest CSV")
        return prepare(self.corpus, self.root_folder(), **self.recipe_options()), self.corpus


@dataclasses.dataclass(frozen=True)
class ManifestOutput:
    """Where ``prepare`` writes the manifest (declared options)."""

    out: str | None = option(
        None, "Manifest CSV to write. Default: cache/<corpus>_manifest.csv.", path="file", show_default=False
    )
    relative: bool = option(
        False,
        "Write audio paths relative to the manifest's folder, so the manifest and the corpus can move together.",
    )


def prepare_manifest(source: CorpusSource, output: ManifestOutput) -> tuple[Manifest, Path]:
    """Run ``source``'s recipe and write its manifest CSV (default ``cache/<corpus>_manifest.csv``)."""
    if source.manifest or not source.corpus:
        raise ConfigError(f"prepare needs --corpus ({', '.join(CORPORA.names())})")
    manifest, name = source.load()
    path = manifest.write_csv(output.out or cache_dir() / f"{name}_manifest.csv", relative=output.relative)
    return manifest, Path(path)


def describe_prepared(manifest: Manifest, path: Path) -> str:
    """What ``prepare`` prints: counts per label, the recipe's problem report, the file."""
    report = getattr(manifest, "report", None)
    lines = [summarise(manifest), *([report.summary()] if report is not None and report.summary() else [])]
    return "\n".join([*lines, f"manifest: {path}"])
