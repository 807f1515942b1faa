"""``sermtl extract`` as one call: a corpus source and :class:`ExtractOptions` → a store.

Picks the store's path (``cache/<corpus>_<feature>.zarr`` unless ``--store`` names one),
builds the extractor, takes over the shards of an interrupted ``torchrun`` run, and runs
:func:`~featurestore.pipeline.extract_to_store`, or its sharded form under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurestore.corpora.source import CorpusSource, cache_dir
from featurestore.extract_options import ExtractOptions
from featurestore.features.base import FeatureExtractor
from featurestore.pipeline import ExtractionReport, extract_to_store
from featurestore.store.base import check_store_path


def store_path_for(name: str, options: ExtractOptions) -> Path:
    """``--store``, else ``cache/<name>_<feature>.zarr`` (``.h5`` with ``--format hdf5``).

    >>> str(store_path_for("iemocap", ExtractOptions(feature="mfcc", format="hdf5")))
    'cache/iemocap_mfcc.h5'
    """
    if options.store:
        return check_store_path(options.store)
    return cache_dir() / f"{name}_{options.feature}{'.h5' if options.format == 'hdf5' else '.zarr'}"


def extract_corpus(
    source: CorpusSource,
    options: ExtractOptions,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> ExtractionReport | None:
    """Extract ``options.feature`` for every utterance of ``source`` into its store (resumable).

    Under ``torchrun`` every rank calls it and rank 0 merges the ranks' shards into the one
    store; the others return ``None``. Run in one process, it first takes in what the shards
    of an interrupted ``torchrun`` run hold. ``echo`` gets each skipped item's line (with
    ``--on-error skip``) and the take-over line.
    """
    from featurestore.distributed import extract_sharded, process_group, shard_dir, take_in_shards

    manifest, name = source.load()
    store_path = store_path_for(name, options)
    with process_group(options.device) as group:  # None outside torchrun; binds a rank's GPU first
        extractor = _extractor(options)
        settings = _settings(options, extractor, progress=progress, echo=echo)
        if group is not None:
            return extract_sharded(group, manifest, extractor, store_path, **settings)
        if shard_dir(store_path).is_dir():
            taken = take_in_shards(manifest, extractor, store_path, format=options.format, dtype=settings["dtype"])
            echo(f"{shard_dir(store_path)}: {taken} entries of an interrupted torchrun run taken in")
        return extract_to_store(manifest, extractor, store_path, **settings)


def _extractor(options: ExtractOptions) -> FeatureExtractor:
    from featurestore.features import accepted_options, build_extractor

    wanted = {"device": options.device, "model": options.model, "layers": options.layers, "workers": options.workers}
    return build_extractor(
        options.feature, **accepted_options(options.feature, {**wanted, "chunk_seconds": options.chunk_seconds})
    )


def _settings(
    options: ExtractOptions, extractor: FeatureExtractor, *, progress: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
    """The keyword arguments of :func:`extract_to_store`, the extractor's defaults filled in."""
    return {
        "format": options.format,
        "dtype": options.dtype or extractor.default_dtype,
        "batch_seconds": extractor.default_batch_seconds if options.batch_seconds is None else options.batch_seconds,
        "max_batch": options.max_batch,
        "on_error": options.on_error,
        "workers": options.workers,
        "on_item_error": echo,
        "repair": options.repair,
        "max_duration": options.max_duration,
        "progress": progress,
    }


def describe_extraction(report: ExtractionReport, repair: bool = False) -> str:
    """The line ``sermtl extract`` ends with: counts and speed."""
    speed = (
        f"{report.audio_seconds:.1f} audio s in {report.elapsed:.1f} s ({report.realtime_factor:.0f}x real time)"
        if report.stored
        else f"nothing to extract ({report.elapsed:.2f} s)"
    )
    repaired = f", {len(report.repaired)} repaired" if repair else ""
    return (
        f"{report.store}: {report.stored} stored, {report.already_done} already there, "
        f"{len(report.skipped)} skipped{repaired}; {speed}"
    )
