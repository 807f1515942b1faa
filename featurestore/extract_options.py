"""The options of ``sermtl extract`` (:class:`ExtractOptions`), each declared once
(:mod:`featurestore.options`): flags, defaults and checks for the command line and for
:func:`featurestore.extraction.extract_corpus`. Torch-free.

>>> ExtractOptions(feature="mfcc", workers=0)
Traceback (most recent call last):
...
featurestore.errors.ConfigError: --workers must be in [1, inf), got 0
"""

from __future__ import annotations

import dataclasses

from featurestore.audio import DEFAULT_MAX_DURATION
from featurestore.features import DEFAULT_SSL_MODEL, FEATURES
from featurestore.features.base import device_problem
from featurestore.options import check_fields, option
from featurestore.store.base import STORE_DTYPES, available_backends

#: What ``--on-error`` does with a bad item: stop, or skip it and list it in the store's report.
ON_ERROR_CHOICES = ("fail", "skip")


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How features are extracted into a store (declared options, checked when built)."""

    feature: str | None = option(None, "Feature to extract.", choices=tuple(FEATURES.names()), required=True)
    model: str = option(DEFAULT_SSL_MODEL, "w2v2: Hugging Face model name or local folder (wav2vec2, HuBERT, WavLM).")
    layers: str = option("last", "w2v2: hidden states to keep: last, all, or a list like 0,12,24.")
    store: str | None = option(
        None, "Store path. Default: cache/<corpus>_<feature>.zarr (.h5 with --format hdf5).", path="any"
    )
    format: str | None = option(
        None, "Store format. Default: from the --store suffix, else zarr.", choices=tuple(available_backends())
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1 …", check=device_problem)
    batch_seconds: float | None = option(
        None, "Padded audio seconds per batch. Default: 200 for w2v2, 600 for the others.", low=0, open_low=True
    )
    max_batch: int | None = option(None, "At most this many utterances per batch (1 = one by one).", low=1)
    dtype: str | None = option(
        None, "Stored dtype. Default: float16 for w2v2, float32 for the others.", choices=STORE_DTYPES
    )
    chunk_seconds: float | None = option(
        None, "w2v2: utterances longer than this are processed in overlapping windows.", low=0
    )
    on_error: str = option(
        "fail", "Bad item: stop, or skip it and list it in the store's report.", choices=ON_ERROR_CHOICES
    )
    workers: int = option(2, "Audio decoding threads; openSMILE features also compute in this many processes.", low=1)
    repair: bool = option(False, "First recompute the entries that `sermtl verify` finds wrong.")
    max_duration: float | None = option(
        DEFAULT_MAX_DURATION,
        "Longest audio (file or segment) to decode, in seconds; longer audio is refused "
        "(extract: it fails or is skipped, see --on-error).",
        low=0,
        open_low=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
