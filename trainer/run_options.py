"""The options of ``train``, ``cv``, ``sweep`` and ``experiment`` beyond the training and
protocol options (:class:`RunOptions`, :class:`SweepOptions`, :class:`ExperimentOptions`),
each declared once, and :func:`resolve_run`: a config file plus the flags given → the
store, protocol and training config of a run. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError
from featurestore.features import FEATURES
from featurestore.options import check_fields, declared, key_values, option
from featurestore.store.fusion import sibling_stores
from trainer.config import ConfigFile, TrainConfig, preset_names, read_config_file
from trainer.folds import PROTOCOLS
from trainer.limits import MAX_SEEDS
from trainer.protocols import Protocol


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where a run reads and writes, and how many seeds it runs (declared options)."""

    stores: tuple[str, ...] = option(
        (),
        "Feature store to train on (or the one --config names). Repeat to fuse stores of the same "
        "utterances: frame-level ones side by side on their common frame grid, utterance-level ones "
        "(functionals) joined to the pooled statistics.",
        flag="--store",
        path="any",
    )
    fuse: tuple[str, ...] = option(
        (),
        "Also fuse the stores of these features beside --store, named as extract names them "
        "(cache/x_egemaps.zarr with fbank: cache/x_fbank.zarr); none: no fusion (a --config may name some).",
        choices=("none", *FEATURES.names()),
        metavar="FEATURE",
    )
    config_file: str | None = option(
        None,
        f"Options from a YAML/JSON file (a run's config.json too) or a preset ({', '.join(preset_names())}); "
        "flags given on the command line override it.",
        flag="--config",
        metavar="FILE|PRESET",
    )
    out: str | None = option(
        None,
        "Run directory. Default: runs/<store>-<aux>-<protocol> (train --all-data: models/<store>; "
        "sweep: sweeps/<store>).",
        path="dir",
    )
    repeats: int = option(
        1,
        "Seeds --seed … --seed+N−1, the folds drawn anew for each: cv runs into OUT/seed_<s> and writes "
        "OUT/repeats.json (mean ± std over seeds) and OUT/ensemble.json (the seeds' mean probabilities, "
        "scored on each seed's folds); train --all-data makes a model of the N seeds (their mean "
        "probabilities); sweep runs every setting on the same folds of each seed; baseline fits on the same "
        "folds as cv.",
        low=1,
        high=MAX_SEEDS,
    )
    fold: int = option(1, "Which fold of the protocol to train.", low=1)
    all_data: bool = option(
        False,
        "Train the deployable model on every row instead (no test): with --config RUN/config.json, the "
        "run's settings and the median of the epochs its folds kept; writes checkpoint.pt and MODEL_CARD.md.",
    )
    tensorboard: bool = option(
        False,
        "Also log every epoch as TensorBoard scalars under OUT/tensorboard/fold_<k> "
        "(pip install 'sermtl[tensorboard]').",
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The grid of a sweep (declared options)."""

    grids: tuple[str, ...] = option(
        (),
        "Values of one option to sweep (repeatable): the sweep runs the Cartesian product, e.g. "
        "--grid alpha0=0.05,0.1 --grid aux=none,expression.",
        flag="--grid",
        metavar="KEY=V1,V2,…",
    )
    grid_file: str | None = option(
        None, "YAML/JSON list of settings (mappings of options), for a grid that is not a product.", path="file"
    )
    baseline: str | None = option(
        None, "The setting the others are compared with (default: the first).", metavar="KEY=VALUE,…"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.grids and self.grid_file:
            raise ConfigError("--grid and --grid-file: give one of them, not both")


@dataclasses.dataclass(frozen=True)
class ExperimentOptions:
    """Where an experiment finds corpora and stores and what it runs (declared options)."""

    out: str = option("experiments", "Experiment folder (runs are shared inside it).", path="dir")
    roots: tuple[str, ...] = option(
        (),
        "Corpus folder (or CSV manifest), e.g. iemocap=/data/IEMOCAP_full_release.",
        flag="--root",
        metavar="CORPUS=DIR",
    )
    stores: tuple[str, ...] = option(
        (),
        "Use an existing store, e.g. iemocap:w2v2=cache/iemocap_w2v2.zarr.",
        flag="--store",
        metavar="CORPUS:FEATURE=PATH",
    )
    corpora: tuple[str, ...] = option(
        (), "Corpora to run (default: iemocap and baum1, those available; table5: exactly two).", flag="--corpus"
    )
    feature: str | None = option(
        None, "Restrict to one feature (default: the paper's for the experiment).", choices=tuple(FEATURES.names())
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def root_map(self) -> dict[str, str]:
        """``--root CORPUS=DIR`` as ``{corpus: folder}``."""
        return key_values(self.roots, "--root")

    def store_map(self) -> dict[tuple[str, str], Path]:
        """``--store CORPUS:FEATURE=PATH`` as ``{(corpus, feature): path}``."""
        stores = {}
        for key, path in key_values(self.stores, "--store").items():
            corpus, sep, feature = key.partition(":")
            if not sep or feature not in FEATURES:
                raise ConfigError(
                    f"--store expects CORPUS:FEATURE=PATH with FEATURE one of {', '.join(FEATURES)}, got {key!r}"
                )
            stores[(corpus, feature)] = Path(path)
        return stores


#: The protocol's fields that have a flag (``--protocol``, ``--by``, ``--folds``, …), by name.
PROTOCOL_FLAGS = {field.name: spec for field, spec in declared(Protocol) if spec.cli}


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """What a run trains on: the store (a path, or the paths of the stores it fuses), the
    protocol (``None``: the store's default) and the config."""

    store: str | tuple[str, ...]
    protocol: Protocol | None
    config: TrainConfig


def resolve_run(
    store: str | Sequence[str] | None,
    config_file: str | None,
    flags: dict[str, Any],
    fuse: Sequence[str] = (),
) -> ResolvedRun:
    """The run that ``--config`` (a file or preset) and the ``flags`` given on the command
    line describe; the flags (training and protocol options, by field name, as given) win
    over the file. ``store``: the ``--store`` given (one, several to fuse, or none);
    ``fuse``: the ``--fuse`` features given, else the file's
    (:func:`~featurestore.store.fusion.sibling_stores`; stores given one by one win over
    the file's)."""
    file = read_config_file(config_file) if config_file else ConfigFile("")
    config = TrainConfig.from_dict({**file.train, **{k: v for k, v in flags.items() if k not in PROTOCOL_FLAGS}})
    given = (store,) if isinstance(store, str) else tuple(store or ())
    store = (given[0] if len(given) == 1 else given) if given else file.store
    if not store:
        raise ConfigError("--store is required (or a --config that names one)")
    features = [f for f in (fuse or file.fuse) if f != "none"]
    if features and not isinstance(store, str):
        if fuse:
            raise ConfigError("--fuse: give one --store (its siblings are found by name), not several")
        features = []  # the stores given one by one are the fusion; the file's fuse gives way
    if features:
        store = sibling_stores(store, features)
    protocol = dict(file.protocol or {})
    for key, spec in PROTOCOL_FLAGS.items():
        if key in flags:
            value = flags[key]
            protocol[key] = spec.parse(value) if spec.parse and value is not None else value
    if protocol.get("path") is not None:
        protocol.setdefault("name", "file")
        protocol.setdefault("by", None)
    if protocol and "name" not in protocol:
        raise ConfigError(f"--by/--folds/--valid-fraction need --protocol ({', '.join(PROTOCOLS)})")
    return ResolvedRun(store, Protocol.from_dict(protocol, "the protocol flags") if protocol else None, config)


def cv_run_of(config_file: str | None) -> Path | None:
    """The cv run a ``--config RUN/config.json`` comes from (its folder), else ``None``."""
    return Path(config_file).parent if config_file and Path(config_file).name == "config.json" else None


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """Where ``sermtl demo`` works (declared options)."""

    out: str = option("demo", "Folder for the corpus, model, stores and summary.", path="dir")
